"""Manifests of the networks users download from a hub as single ONNX files (issue 20: face swap,
restoration, lip sync, portrait animation). No package on the registries ships their weights, so
a capability declares each file it needs as a HubFile: where to get it, the sha256 of every copy
known to be good, its input and output signature, its licence and the memory it needs. The file
itself lives at `local_path(data_dir, entry)`, put there by the model store (a download job, or a
file the user brings) only after its hash and its signature are checked.

Facts behind each entry (URLs, hashes, shapes, licences) are in docs/face_studio_facts.md, with
their sources.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

HUB_FOLDER = "hub-files"   # under the engine's data dir

# ONNX TensorProto element types by the names numpy and onnxruntime use.
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
           10: "float16", 11: "float64"}


@dataclass(frozen=True)
class Tensor:
    """One input or output of a graph: its name (None: no source names it, so it is matched by
    position), shape (an int per fixed axis, a name or None for a free one) and element type."""
    name: str | None
    shape: tuple[int | str | None, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class HubFile:
    """One network file a capability needs and no package ships."""
    name: str                          # the engine's name for it, e.g. "gfpgan-1.4"
    file: str                          # its file name, e.g. "gfpgan_1.4.onnx"
    urls: tuple[str, ...]              # where to download it, tried in order
    sha256: tuple[str, ...]            # every copy known to be good (mirrors differ)
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    licence: str                       # as its authors state it, one line
    commercial: bool                   # False: the user must accept the licence before use
    min_memory: int                    # bytes a run needs beyond nothing (weights + activations)
    size: int | None = None            # bytes of the file, where a source gives it
    facts: str = "docs/face_studio_facts.md"
    notes: tuple[str, ...] = field(default=())


# What an ONNX Runtime session holds beyond its file's bytes (its graph, kernels, the arena's first
# block): measured 10 MiB for the GFPGAN- and inswapper-sized graphs in `python -m bench hub-footprints`.
SESSION_BYTES = 16 * 2**20


def load_estimate(entry: HubFile) -> int:
    """The bytes a loaded session of entry's file is expected to hold, before the engine has
    measured it: the file, and the session around it."""
    return (entry.size or 0) + SESSION_BYTES


def local_path(data_dir: str | os.PathLike, entry: HubFile) -> Path:
    """Where the file of `entry` lives once the store has it."""
    return Path(data_dir) / HUB_FOLDER / entry.name / entry.file


def graph_signature(path: str | os.PathLike) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of an ONNX file, read from its graph without running it. Initializers
    that some exporters also list as inputs are left out."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    weights = {init.name for init in graph.initializer}

    def tensor(value) -> Tensor:
        kind = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in kind.shape.dim)
        return Tensor(value.name, dims, _DTYPES.get(kind.elem_type, str(kind.elem_type)))

    return ([tensor(v) for v in graph.input if v.name not in weights], [tensor(v) for v in graph.output])


def signature_problems(path: str | os.PathLike, entry: HubFile) -> list[str]:
    """What in the ONNX file at path differs from the signature entry declares: one plain
    sentence per difference (an empty list: it fits). A free axis on either side matches any size."""
    try:
        inputs, outputs = graph_signature(path)
    except Exception as exc:   # not an ONNX file, or a damaged one
        return [f"{Path(path).name} is not a readable ONNX graph ({exc.__class__.__name__}: {exc})."]
    problems = []
    for side, want, have in (("input", entry.inputs, inputs), ("output", entry.outputs, outputs)):
        found = {t.name: t for t in have}
        if len(have) != len(want):
            problems.append(f"{entry.file} should have {len(want)} {side}(s) "
                            f"({', '.join(t.name or '(any name)' for t in want)}); this file has {len(have)} "
                            f"({', '.join(t.name for t in have)}).")
        for at, t in enumerate(want):
            got = found.get(t.name) if t.name is not None else (have[at] if at < len(have) else None)
            if got is None:
                if len(have) == len(want):
                    problems.append(f"{entry.file} should have an {side} named '{t.name}'; this file's "
                                    f"{side}s are {', '.join(h.name for h in have)}.")
                continue
            if got.dtype != t.dtype:
                problems.append(f"{side} '{got.name}' should be {t.dtype}; this file's is {got.dtype}.")
            if len(got.shape) != len(t.shape) or any(
                    isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(got.shape, t.shape)):
                problems.append(f"{side} '{got.name}' should have shape {_shape(t.shape)}; "
                                f"this file's is {_shape(got.shape)}.")
    return problems


def _shape(shape: tuple) -> str:
    return "[" + ", ".join("?" if d in (None, "") or isinstance(d, str) else str(d) for d in shape) + "]"
