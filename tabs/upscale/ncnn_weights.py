"""Read an ncnn model (.param text + .bin weights) into numpy arrays, without ncnn.

The .param file lists the layers in order: `type name n_in n_out in_blobs.. out_blobs.. key=value..`
(magic 7767517 on line one, layer and blob counts on line two; a key below -23300 holds an
array `len,v1,v2..` for key -23300-k). The .bin file is the weighted layers' blobs, in layer order,
each padded to 4 bytes:

- a Convolution's weights [out, in, kh, kw] (param 6 = their count) start with a 4-byte tag:
  0x01306B47 = float16, 0 = float32; a 0x000D4B38 tag (int8) or any other non-zero tag
  (a 256-entry quantisation table) is not supported here. Its bias (param 5 = 1), [out] float32,
  follows with no tag.
- a PReLU's slopes (param 0 = their count) are float32 with no tag.

Those two are the only weighted layers in the Real-ESRGAN nets; any other weighted layer type
raises, rather than silently shifting every blob after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
# Layer types that own no blob in the .bin (those the Real-ESRGAN nets use, and a few harmless others).
UNWEIGHTED = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle",
              "ReLU", "Sigmoid", "Crop", "Reshape", "Permute", "Flatten", "Noop"}


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict = field(default_factory=dict)   # key (int) -> int | float | list
    weights: dict = field(default_factory=dict)  # "weight" | "bias" | "slope" -> float32 array

    def get(self, key: int, default=None):
        return self.params.get(key, default)


def _value(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_param(path: Path | str) -> list[Layer]:
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise ValueError(f"{path}: not an ncnn .param file (magic {MAGIC} missing)")
    layer_count = int(lines[1][0])
    layers = []
    for parts in lines[2:2 + layer_count]:
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        blobs = parts[4:4 + n_in + n_out]
        params = {}
        for pair in parts[4 + n_in + n_out:]:
            key, value = pair.split("=", 1)
            key = int(key)
            if key <= -23300:
                params[-23300 - key] = [_value(v) for v in value.split(",")[1:]]
            else:
                params[key] = _value(value)
        layers.append(Layer(kind, name, blobs[:n_in], blobs[n_in:], params))
    if len(layers) != layer_count:
        raise ValueError(f"{path}: {layer_count} layers announced, {len(layers)} found")
    return layers


class _Reader:
    def __init__(self, data: bytes, path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, count: int, dtype) -> np.ndarray:
        size = count * np.dtype(dtype).itemsize
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.path}: ends early (wanted {size} bytes at offset {self.pos})")
        array = np.frombuffer(self.data, dtype, count, self.pos)
        self.pos += (size + 3) // 4 * 4   # every blob is padded to 4 bytes
        return array

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int(self.take(1, "<u4")[0])
        if tag == TAG_FP16:
            return self.take(count, "<f2").astype(np.float32)
        if tag == 0:
            return self.take(count, "<f4").astype(np.float32)
        kind = "int8" if tag == TAG_INT8 else "quantised"
        raise ValueError(f"{self.path}: {what} has {kind} weights (tag {tag:#010x}); only fp16/fp32 are read")


def read_model(param_path: Path | str, bin_path: Path | str) -> list[Layer]:
    """The layers of `param_path`, each weighted one with its arrays filled from `bin_path`."""
    layers = parse_param(param_path)
    reader = _Reader(Path(bin_path).read_bytes(), bin_path)
    for layer in layers:
        if layer.type == "Convolution":
            out, kernel, count = layer.get(0), layer.get(1, 1), layer.get(6)
            kernel_h = layer.get(11, kernel)
            if out is None or count is None or count % (out * kernel * kernel_h):
                raise ValueError(f"{bin_path}: {layer.name} has an unreadable weight shape")
            weight = reader.tagged(count, layer.name)
            layer.weights["weight"] = weight.reshape(out, count // (out * kernel * kernel_h), kernel_h, kernel)
            if layer.get(5, 0):
                layer.weights["bias"] = reader.take(out, "<f4").astype(np.float32)
        elif layer.type == "PReLU":
            layer.weights["slope"] = reader.take(layer.get(0, 1), "<f4").astype(np.float32)
        elif layer.type not in UNWEIGHTED:
            raise ValueError(f"{param_path}: layer type {layer.type} ({layer.name}) is not supported")
    if reader.pos != len(reader.data):
        raise ValueError(f"{bin_path}: {len(reader.data) - reader.pos} bytes left after the last layer")
    return layers
