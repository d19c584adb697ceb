"""Every hub network the catalog declares (tabs.catalog.hub_file_entries), whatever capability it
belongs to: a graph built from nothing but its manifest entry (bench/hub_footprints.same_size_graph,
with small weights here; the bench builds them at the real file's size) fits the entry's signature,
is brought as a user's file is, loads through the capability's own spec and runs on inputs of the
declared shapes, giving outputs of the declared shapes. So a manifest and the loader that reads its
file cannot drift apart unseen."""
from __future__ import annotations

import pytest

from bench.hub_footprints import feeds, same_size_graph
from store import hub_files
from store.manifest import load_estimate, signature_problems
from tabs.catalog import build_engine, hub_file_entries

ENTRIES = {entry.name: entry for entry in hub_file_entries()}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    data = tmp_path_factory.mktemp("hub_signatures")
    for entry in ENTRIES.values():
        graph = same_size_graph(entry, data / "graphs" / entry.name / entry.file, weight_bytes=4096)
        assert signature_problems(graph, entry) == []
        hub_files.bring(entry, graph, data, accept_licence=True, trust_unlisted=True)
    return build_engine(data_dir=data, store=False)


def test_the_catalog_declares_the_face_studios_networks():
    assert {"gfpgan-1.4", "codeformer", "inswapper-128", "arcface-w600k-r50"} <= set(ENTRIES)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_a_graph_of_the_manifests_signature_loads_and_runs_through_its_spec(engine, name):
    entry = ENTRIES[name]
    spec = engine.registry.get(name)
    # The file and its session (a file whose size no source gives is expected at some size).
    assert spec.runtime == "onnxruntime" and spec.estimate_bytes >= load_estimate(entry) > (entry.size or 0)
    outputs = engine.infer("test", name, lambda model: model.session.run(None, feeds(entry)))
    assert len(outputs) == len(entry.outputs)
    for got, want in zip(outputs, entry.outputs):
        assert str(got.dtype) == want.dtype
        assert all(not isinstance(d, int) or d == g for d, g in zip(want.shape, got.shape)), (got.shape, want.shape)
