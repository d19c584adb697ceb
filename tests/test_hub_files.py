"""Hub ONNX files by their manifest (store/hub_files.py, issue 20), on local files and a local HTTP
server only: random-weight graphs with GFPGAN 1.4's and CodeFormer's signatures as
docs/face_studio_facts.md gives them (input (1,3,512,512) float32, CodeFormer's weight (1,)
float64), downloaded from the first URL that answers, resumed after a cut, refused on a sha256 or
signature mismatch (and deleted), a non-commercial licence accepted and remembered, a local file
brought in, status() for the tab, and the download_hub_file job with progress and cancel."""
import dataclasses
import hashlib
import json
import socket
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import store as ms
from engine import Engine, JobCancelled
from store import hub_files, hub_messages
from store.manifest import HubFile, Tensor, local_path
from test_model_store import Server   # the Range-capable local server with a cut switch

SIDE = 512   # GFPGAN / CodeFormer crop (facts §2a, §2b)
GFPGAN_LICENCE = "Apache-2.0"
CODEFORMER_LICENCE = "S-Lab License 1.0: non-commercial use only"


def restorer_graph(path: Path, *, channels: int = 8, seed: int = 0, side: int = SIDE, weight: bool = False,
                   input_name: str = "input") -> Path:
    """Conv-Tanh-Conv with random weights, mapping [1,3,side,side] to the same; with `weight`, a
    second input 'weight' float64 (1,) scales the output, as CodeFormer's fidelity weight enters."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((channels, 3, 3, 3)) * 0.1).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((3, channels, 3, 3)) * 0.1).astype(np.float32), "w2")
    last = "output" if not weight else "restored"
    nodes = [helper.make_node("Conv", [input_name, "w1"], ["hidden"], pads=[1, 1, 1, 1]),
             helper.make_node("Tanh", ["hidden"], ["act"]),
             helper.make_node("Conv", ["act", "w2"], [last], pads=[1, 1, 1, 1])]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, side, side])]
    if weight:
        inputs.append(helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]))
        nodes += [helper.make_node("Cast", ["weight"], ["weight32"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [last, "weight32"], ["output"])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, side, side])]
    graph = helper.make_graph(nodes, "restorer", inputs, outputs, [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def entry(urls, sha=(), *, name="gfpgan-1.4", file="gfpgan_1.4.onnx", commercial=True,
          licence=GFPGAN_LICENCE, weight=False, size=None) -> HubFile:
    inputs = (Tensor("input", (1, 3, SIDE, SIDE)),) + ((Tensor("weight", (1,), "float64"),) if weight else ())
    return HubFile(name=name, file=file, urls=tuple(urls), sha256=tuple(sha), inputs=inputs,
                   outputs=(Tensor("output", (1, 3, SIDE, SIDE)),), licence=licence, commercial=commercial,
                   min_memory=1 << 30, size=size)


def dead_url(file: str) -> str:
    """A localhost URL nothing listens on: refused at once, as an unreachable host is."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/{file}"


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def graph(tmp_path):
    """A ~1 MB graph with GFPGAN 1.4's signature (large enough to be cut halfway)."""
    return restorer_graph(tmp_path / "served" / "gfpgan_1.4.onnx", channels=4800)


# ---------------------------------------------------------------------------------- fetch

def test_a_download_goes_to_the_first_url_that_answers_resumes_after_a_cut_and_is_checked(tmp_path, server, graph):
    data = tmp_path / "data"
    url = server.serve("gfpgan_1.4.onnx", graph)
    gfpgan = entry([dead_url("gfpgan_1.4.onnx"), url], [sha256(graph)], size=graph.stat().st_size)
    before = hub_files.status(gfpgan, data)
    assert not before["present"] and before["state"] == "missing" and before["sha256"] is None
    assert gfpgan.urls[0] in before["how_to_get"] and url in before["how_to_get"]
    assert str(local_path(data, gfpgan)) in before["how_to_get"] and GFPGAN_LICENCE in before["how_to_get"]

    server.cut_next = True
    reports = []
    with pytest.raises(ms.DownloadInterrupted, match="resumes"):
        hub_files.fetch(gfpgan, data, lambda f, m: reports.append((f, m)), retries=0)
    partial = hub_files.partial_path(data, gfpgan)
    half = partial.stat().st_size
    assert 0 < half < graph.stat().st_size and not local_path(data, gfpgan).exists()
    assert hub_files.status(gfpgan, data)["partial_bytes"] == half

    done = hub_files.fetch(gfpgan, data, lambda f, m: reports.append((f, m)))
    assert server.requests[-1]["range"] == f"bytes={half}-"   # only the rest was fetched
    assert local_path(data, gfpgan).read_bytes() == graph.read_bytes()
    assert done["ready"] and done["state"] == "ready" and done["sha256"] == sha256(graph)
    assert done["sha256_listed"] and not done["trusted"] and done["partial_bytes"] == 0
    assert done["size"] == graph.stat().st_size and done["path"] == str(local_path(data, gfpgan))
    assert not partial.exists() and not partial.with_name(partial.name + ".json").exists()
    assert any(m.startswith("downloading") for _, m in reports) and reports[-1][0] == 1.0
    assert hub_files.require(gfpgan, data) == local_path(data, gfpgan)
    # Already here: no request at all.
    count = len(server.requests)
    assert hub_files.fetch(gfpgan, data)["ready"] and len(server.requests) == count


def test_a_download_whose_sha256_is_not_listed_is_refused_and_deleted(tmp_path, server, graph):
    data = tmp_path / "data"
    gfpgan = entry([server.serve("gfpgan_1.4.onnx", graph)], ["0" * 64, "1" * 64])
    with pytest.raises(ms.ChecksumMismatch, match=f"sha256 is {sha256(graph)}, not one of the known good.*deleted"):
        hub_files.fetch(gfpgan, data)
    assert not local_path(data, gfpgan).exists() and not hub_files.partial_path(data, gfpgan).exists()
    status = hub_files.status(gfpgan, data)
    assert status["state"] == "missing" and status["partial_bytes"] == 0
    # With no hash known at all, a download needs the user's trust, asked before any byte moves.
    unknown = entry(gfpgan.urls, [])
    count = len(server.requests)
    with pytest.raises(ms.ChecksumMismatch, match="No sha256 of a good copy.*trust this file"):
        hub_files.fetch(unknown, data)
    assert len(server.requests) == count
    trusted = hub_files.fetch(unknown, data, trust_unlisted=True)
    assert trusted["ready"] and trusted["trusted"] and trusted["sha256_listed"] is False


def test_a_download_whose_graph_does_not_fit_is_refused_in_plain_words_and_deleted(tmp_path, server):
    data = tmp_path / "data"
    small = restorer_graph(tmp_path / "served" / "small.onnx", side=256)   # right names, wrong crop size
    gfpgan = entry([server.serve("gfpgan_1.4.onnx", small)], [sha256(small)])
    with pytest.raises(ms.Refused) as refused:
        hub_files.fetch(gfpgan, data)
    message = str(refused.value)
    assert "input 'input' should have shape [1, 3, 512, 512]; this file's is [1, 3, 256, 256]." in message
    assert "output 'output' should have shape [1, 3, 512, 512]" in message and "was deleted" in message
    assert not local_path(data, gfpgan).exists() and not hub_files.partial_path(data, gfpgan).exists()

    renamed = restorer_graph(tmp_path / "served" / "renamed.onnx", input_name="image")
    gfpgan = entry([server.serve("renamed.onnx", renamed)], [sha256(renamed)])
    with pytest.raises(ms.Refused, match="gfpgan_1.4.onnx should have an input named 'input'; this file's "
                                         "inputs are image."):
        hub_files.fetch(gfpgan, data)


def test_offline_says_which_urls_and_the_exact_path_at_once(tmp_path):
    data = tmp_path / "data"
    gfpgan = entry([dead_url("gfpgan_1.4.onnx"), dead_url("gfpgan_1.4.onnx")], ["a" * 64])
    started = time.perf_counter()
    for attempt in (lambda: hub_files.check_fetch(gfpgan, data), lambda: hub_files.fetch(gfpgan, data)):
        with pytest.raises(ms.Offline) as offline:
            attempt()
        message = str(offline.value)
        assert all(url in message for url in gfpgan.urls)
        assert f"put it at exactly {local_path(data, gfpgan)}" in message and "a" * 64 in message
    assert time.perf_counter() - started < 2.0


def test_a_cancelled_download_keeps_its_bytes_and_the_next_resumes(tmp_path, server, graph):
    data = tmp_path / "data"
    gfpgan = entry([server.serve("gfpgan_1.4.onnx", graph)], [sha256(graph)])
    seen = []

    def cancelled():
        seen.append(1)
        if len(seen) > 3:   # a few blocks in, as the job's ctx.check_cancelled does after a cancel
            raise JobCancelled()

    slow(server)
    with pytest.raises(JobCancelled):
        hub_files.fetch(gfpgan, data, cancelled=cancelled)
    kept = hub_files.partial_path(data, gfpgan).stat().st_size
    assert 0 < kept < graph.stat().st_size
    assert hub_files.fetch(gfpgan, data)["ready"] and server.requests[-1]["range"] == f"bytes={kept}-"


# ---------------------------------------------------------------------------------- licence

def test_a_non_commercial_licence_must_be_accepted_and_the_acceptance_is_kept(tmp_path, server):
    data = tmp_path / "data"
    graph = restorer_graph(tmp_path / "served" / "codeformer.onnx", weight=True)
    codeformer = entry([server.serve("codeformer.onnx", graph)], [sha256(graph)], name="codeformer",
                       file="codeformer.onnx", commercial=False, licence=CODEFORMER_LICENCE, weight=True)
    status = hub_files.status(codeformer, data)
    assert not status["licence_accepted"] and not status["licence_ok"] and CODEFORMER_LICENCE in status["how_to_get"]
    for refused in (lambda: hub_files.fetch(codeformer, data), lambda: hub_files.check_fetch(codeformer, data),
                    lambda: hub_files.bring(codeformer, graph, data)):
        with pytest.raises(ms.Refused, match=f'licensed "{CODEFORMER_LICENCE}": not for commercial use'):
            refused()
    assert server.requests == [] and not local_path(data, codeformer).exists()

    assert hub_files.fetch(codeformer, data, accept_licence=True)["ready"]
    state = json.loads((data / "hub-files" / "state.json").read_text())
    assert state["licences"]["codeformer"]["licence"] == CODEFORMER_LICENCE
    # Kept: a later call (another process, the job, a run) needs no acceptance again.
    again = hub_files.status(codeformer, data)
    assert again["licence_accepted"] and again["ready"] and hub_files.require(codeformer, data).exists()
    # A changed licence is asked again, before the file is used.
    changed = dataclasses.replace(codeformer, licence=CODEFORMER_LICENCE + " (v2)")
    assert hub_files.status(changed, data)["state"] == "licence not accepted"
    with pytest.raises(ms.Refused, match=r"\(v2\)"):
        hub_files.require(changed, data)
    # A commercial-use licence asks nothing.
    assert hub_files.status(entry([]), data)["licence_ok"]


# ---------------------------------------------------------------------------------- bring

def test_a_file_the_user_has_is_checked_and_put_in_place(tmp_path):
    data = tmp_path / "data"
    mine = restorer_graph(tmp_path / "downloads" / "GFPGANv1.4.onnx", seed=1)
    gfpgan = entry(["https://example.invalid/gfpgan_1.4.onnx"], [sha256(mine)])
    brought = hub_files.bring(gfpgan, str(mine), data)
    assert brought["ready"] and brought["sha256_listed"] and "known good copy" in brought["note"]
    assert local_path(data, gfpgan).read_bytes() == mine.read_bytes() and mine.exists()   # the user's stays
    # What require() hands a capability loads in ONNX Runtime and maps a 512 px crop to one.
    import onnxruntime as ort

    session = ort.InferenceSession(str(hub_files.require(gfpgan, data)), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.random.default_rng(1).random((1, 3, SIDE, SIDE), dtype=np.float32)})[0]
    assert out.shape == (1, 3, SIDE, SIDE) and np.isfinite(out).all() and np.abs(out).max() > 0

    # Not listed: refused unless trusted, and then only because the graph fits.
    other = restorer_graph(tmp_path / "downloads" / "other.onnx", seed=2)
    with pytest.raises(ms.ChecksumMismatch) as unlisted:
        hub_files.bring(gfpgan, other, data)
    message = str(unlisted.value)
    assert f"other.onnx's sha256 is {sha256(other)}: not one of the 1 known good copies" in message
    assert "Its inputs and outputs fit the manifest." in message
    assert "accepted only when you trust it" in message and "trust_unlisted=True" in message
    assert local_path(data, gfpgan).read_bytes() == mine.read_bytes()   # the good file stays
    trusted = hub_files.bring(gfpgan, other, data, trust_unlisted=True)
    assert trusted["ready"] and trusted["trusted"] and trusted["sha256_listed"] is False
    assert "accepted because you trusted it" in trusted["note"]
    assert local_path(data, gfpgan).read_bytes() == other.read_bytes()

    # Trust does not cover a graph that does not fit; nor does a listed hash.
    wrong = restorer_graph(tmp_path / "downloads" / "wrong.onnx", side=256)
    with pytest.raises(ms.ChecksumMismatch, match="do not fit either: input 'input' should have shape"):
        hub_files.bring(gfpgan, wrong, data, trust_unlisted=True)
    with pytest.raises(ms.Refused, match="input 'input' should have shape .*; this file's is \\[1, 3, 256, 256\\]"):
        hub_files.bring(entry(gfpgan.urls, [sha256(wrong)]), wrong, data)
    assert not (local_path(data, gfpgan).parent / ".bringing" / gfpgan.file).exists()
    with pytest.raises(ms.ModelStoreError, match="no such file here"):
        hub_files.bring(gfpgan, tmp_path / "nowhere.onnx", data)


def test_a_file_put_at_the_local_path_by_hand_is_checked_once_on_first_look(tmp_path):
    data = tmp_path / "data"
    good = restorer_graph(tmp_path / "good.onnx", seed=3)
    gfpgan = entry(["https://example.invalid/gfpgan_1.4.onnx"], [sha256(good)])
    target = local_path(data, gfpgan)
    target.parent.mkdir(parents=True)
    target.write_bytes(good.read_bytes())
    assert hub_files.status(gfpgan, data, check=False)["state"] == "not checked yet"
    status = hub_files.status(gfpgan, data)
    assert status["ready"] and status["sha256"] == sha256(good) and status["sha256_listed"]
    # Replaced by another file: its check is made again, and an unlisted one is not used.
    target.write_bytes(restorer_graph(tmp_path / "bad.onnx", seed=4).read_bytes())
    with pytest.raises(ms.ChecksumMismatch, match="accepted only when you trust it"):
        hub_files.require(gfpgan, data)
    assert hub_files.bring(gfpgan, target, data, trust_unlisted=True)["ready"]   # in place, trusted
    assert hub_files.require(gfpgan, data) == target


def test_a_request_hears_every_file_that_is_missing_or_unusable_in_one_short_line(tmp_path):
    data = tmp_path / "data"
    files = [entry(["https://example.invalid/a.onnx"], ["0" * 64], name=f"net-{n}", file=f"net_{n}.onnx")
             for n in "abc"]
    said = hub_messages.short_problems(files, data, "Portrait animation", "Get the model files", "x_download")
    assert said == ("Portrait animation needs 3 files not here yet (net_a.onnx, net_b.onnx, net_c.onnx): "
                    "get them under \"Get the model files\" in its tab (API: x_download).")
    damaged = local_path(data, files[0])
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a graph")
    said = hub_messages.short_problems(files, data, "Portrait animation", "Get the model files", "x_download")
    assert said.startswith("The net_a.onnx in place cannot be used: wrong file: net_a.onnx is not a readable ONNX")
    assert "needs 2 files not here yet (net_b.onnx, net_c.onnx)" in said
    # One file: the sentence each capability's tests know.
    assert hub_messages.short_problem(files[1], data, "Lip sync", "Get the model file", "y").startswith(
        "Lip sync needs the file net_b.onnx, which is not here yet: download it or use your copy")


# ---------------------------------------------------------------------------------- the job

def slow(server: Server, block: int = 64 * 1024, pause_s: float = 0.03) -> None:
    """Make the server send bodies in blocks with a pause between (a slow network), so a cancel
    lands mid-download."""
    base = server.httpd.RequestHandlerClass

    class Slow:
        def __init__(self, raw):
            self.raw = raw

        def write(self, data):
            for i in range(0, len(data), block):
                self.raw.write(data[i:i + block])
                self.raw.flush()
                if len(data) > block:
                    time.sleep(pause_s)
            return len(data)

        def __getattr__(self, name):
            return getattr(self.raw, name)

    class Handler(base):
        def setup(self):
            super().setup()
            self.wfile = Slow(self.wfile)

    server.httpd.RequestHandlerClass = Handler


def test_the_download_hub_file_job_shows_progress_cancels_and_resumes(tmp_path, server, graph):
    data = tmp_path / "data"
    codeformer_graph = restorer_graph(tmp_path / "served" / "codeformer.onnx", weight=True)
    gfpgan = entry([server.serve("gfpgan_1.4.onnx", graph)], [sha256(graph)])
    codeformer = entry([server.serve("codeformer.onnx", codeformer_graph)], [sha256(codeformer_graph)],
                       name="codeformer", file="codeformer.onnx", commercial=False, licence=CODEFORMER_LICENCE,
                       weight=True)
    offline = entry([dead_url("x.onnx")], ["b" * 64], name="offline-one", file="x.onnx")
    engine = Engine(data, job_options={"job_threads": 1, "defaults": {"chunk_frames": 32}})
    kind = ms.hub_file_job_kind(engine.data_dir, lambda: [gfpgan, codeformer, offline])
    assert kind.capability == ms.HUB_JOB_CAPABILITY == "download_hub_file" and kind.lane == "io"
    assert kind.model == ms.JOB_MODEL   # one store download at a time, hub files and models alike
    engine.jobs.register(kind)
    submit = engine.jobs.submit
    # Refused at submit, with the plain message: what could never run never queues.
    with pytest.raises(ms.ModelStoreError, match="No hub file is named 'nope'; the capabilities declare codeformer, "
                                                 "gfpgan-1.4, offline-one"):
        submit(ms.HUB_JOB_CAPABILITY, {"name": "nope"})
    with pytest.raises(ms.ModelStoreError, match="Bad download_hub_file parameters: colour"):
        submit(ms.HUB_JOB_CAPABILITY, {"name": "gfpgan-1.4", "colour": "red"})
    with pytest.raises(ms.Refused, match="not for commercial use"):
        submit(ms.HUB_JOB_CAPABILITY, {"name": "codeformer"})
    with pytest.raises(ms.Offline, match="put it at exactly"):
        submit(ms.HUB_JOB_CAPABILITY, {"name": "offline-one"})
    assert server.requests == []

    slow(server)
    engine.jobs.start()
    try:
        job_id = submit(ms.HUB_JOB_CAPABILITY, {"name": "gfpgan-1.4"})
        notes = []
        for job in engine.jobs.follow(job_id, timeout_s=0.05):
            notes.append((job["progress"], job["note"]))
            if job["progress"] > 0 and (job["note"] or "").startswith("downloading"):
                engine.jobs.cancel(job_id)
        assert job["state"] == "cancelled", job
        kept = hub_files.partial_path(data, gfpgan).stat().st_size
        assert 0 < kept < graph.stat().st_size and not local_path(data, gfpgan).exists()

        job_id = submit(ms.HUB_JOB_CAPABILITY, {"name": "gfpgan-1.4"})
        job = list(engine.jobs.follow(job_id))[-1]
        assert job["state"] == "done", job["error"]
        assert server.requests[-1]["range"] == f"bytes={kept}-"   # resumed where the cancel left it
        result = json.loads(Path(job["result"]).read_text())
        assert result["ready"] and result["sha256"] == sha256(graph) and job["progress"] == 1.0
        assert local_path(data, gfpgan).read_bytes() == graph.read_bytes()

        job_id = submit(ms.HUB_JOB_CAPABILITY, {"name": "codeformer", "accept_licence": True})
        job = list(engine.jobs.follow(job_id))[-1]
        assert job["state"] == "done", job["error"]
        assert hub_files.status(codeformer, data)["licence_accepted"]
    finally:
        engine.jobs.stop()
    assert any(f > 0 and n.startswith("downloading") for f, n in notes)
