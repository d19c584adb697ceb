"""The MediaPipe selfie segmenter in torch, for the Background capability: the .tflite graph
rebuilt by engine.runtimes.tflite (the FlatBuffer reader and the graph-to-torch executor, with
TFLite's semantics and MediaPipe's custom op Convolution2DTransposeBias), wrapped here as
`Segmenter`: one preprocessed image in, P(person) out.

`Segmenter.accelerate` exports the module to ONNX once (cached by weights hash and versions,
engine/runtimes/compiled.py) and runs it on ONNX Runtime, eager torch where that fails.
tests/test_selfie_torch.py holds it to LiteRT's outputs, stored in
tests/data/selfie_litert_reference.npz.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from engine.runtimes.tflite import TFLiteGraph, UnsupportedGraph, read_model

# ------------------------------------------------------------------------ the segmenter

class Segmenter:
    """The selfie segmenter: called with one preprocessed (height, width, 3) float32 image in
    [0, 1], it gives P(person) (height, width) float32. `net` is the TFLiteGraph, or after
    `accelerate` its engine.runtimes.compiled.Accelerated wrapper."""

    def __init__(self, graph: TFLiteGraph, device: str = "cpu"):
        self.device = torch.device(device)
        self.net: torch.nn.Module = graph.to(self.device).eval()
        _, self.height, self.width, channels = graph.model.tensors[graph.input_index].shape
        out_shape = graph.model.tensors[graph.output_indices[0]].shape
        if channels != 3 or len(graph.output_indices) != 1 or out_shape != (1, self.height, self.width, 1):
            raise UnsupportedGraph(f"unexpected tensors: input (.., {channels}) -> {out_shape}")

    @property
    def runtime(self) -> str:
        """What runs the net now: "onnxruntime", or "torch" (eager, also after a fall-back)."""
        return "onnxruntime" if getattr(self.net, "mode", "eager") == "onnx" else "torch"

    def accelerate(self, mode: str, cache_dir: str | os.PathLike | None, key: str,
                   threads: int | None = None) -> None:
        """Run the net as `mode` ("onnx": exported once, cached in `cache_dir` under `key`, run by
        ONNX Runtime on the net's device; see engine/runtimes/compiled.py), eager on failure.
        The input size is fixed (the graph's resize sizes are constants): a static export."""
        from engine.runtimes.compiled import accelerate

        gen = torch.Generator().manual_seed(0)  # the export's example: an image-like [0, 1] input
        example = torch.rand((1, self.height, self.width, 3), generator=gen).to(self.device)
        self.net = accelerate(self.net, (example,), mode, cache_dir, key, dynamic=False, threads=threads)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.net(torch.from_numpy(np.ascontiguousarray(x[None], dtype=np.float32)).to(self.device))
        return out[0, ..., 0].float().cpu().numpy()


def load(device: str, path: str | os.PathLike) -> Segmenter:
    """The selfie segmenter of the .tflite at `path` on torch, eager, on `device`."""
    return Segmenter(TFLiteGraph(read_model(path)), device)
