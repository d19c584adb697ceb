"""Read an ncnn model (.param text + .bin weights) into numpy arrays, without ncnn.

Generic: it knows ncnn's file format and layer types, no model family. Its users (tabs/upscale's
Real-ESRGAN, tabs/deblock's waifu2x CUNet) map the layers onto torch themselves.

The .param file lists the layers in order: `type name n_in n_out in_blobs.. out_blobs.. key=value..`
(magic 7767517 on line one, layer and blob counts on line two; a key below -23300 holds an
array `len,v1,v2..` for key -23300-k). The .bin file is the weighted layers' blobs, in layer order,
each padded to 4 bytes. What each weighted layer stores (ncnn src/layer/<type>.cpp, load_model):

- Convolution, ConvolutionDepthWise, Deconvolution, DeconvolutionDepthWise: weights (param 6 =
  their count) that start with a 4-byte tag: 0x01306B47 = float16, 0 = float32; a 0x000D4B38 tag
  (int8) or any other non-zero tag (a 256-entry quantisation table) is not supported here. Their
  bias (param 5 = 1), [num_output] float32, follows with no tag. The layout is
  [num_output, in / group, kh, kw] for all four (a Deconvolution's too: out[i * stride + k] +=
  in[i] * w[k], no kernel flip; torch's conv_transpose2d wants dims 0 and 1 swapped).
- InnerProduct: tagged weights [num_output, in] (param 2 = their count), then a float32 bias
  (param 1 = 1).
- PReLU: slopes (param 0 = their count), float32, no tag.
- Scale: scale_data (param 0 = their count) and, with param 1 = 1, a bias of the same count, both
  float32 with no tag; param 0 = -233 means the scale is the layer's second input blob, and then
  nothing is stored (not even the bias).

Layers with int8 arithmetic (param 8 = 1 on the conv types and InnerProduct) store more blobs and
are refused; so is any other weighted type, rather than silently shifting every blob after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
# Layer types that own no blob in the .bin (those our nets use, and a few harmless others).
UNWEIGHTED = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle",
              "ReLU", "Sigmoid", "Crop", "Reshape", "Permute", "Flatten", "Noop", "Pooling"}
CONVOLUTIONS = {"Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise"}


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict = field(default_factory=dict)   # key (int) -> int | float | list
    weights: dict = field(default_factory=dict)  # "weight" | "bias" | "slope" | "scale" -> float32 array

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

    def floats(self, count: int) -> np.ndarray:
        return self.take(count, "<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int(self.take(1, "<u4")[0])
        if tag == TAG_FP16:
            return self.take(count, "<f2").astype(np.float32)
        if tag == 0:
            return self.take(count, "<f4").astype(np.float32)
        kind = "int8" if tag == TAG_INT8 else "quantised"
        raise ValueError(f"{self.path}: {what} has {kind} weights (tag {tag:#010x}); only fp16/fp32 are read")


def _read_convolution(layer: Layer, reader: _Reader) -> None:
    out, kernel, count = layer.get(0), layer.get(1, 1), layer.get(6)
    kernel_h = layer.get(11, kernel)
    if out is None or count is None or count % (out * kernel * kernel_h):
        raise ValueError(f"{reader.path}: {layer.name} has an unreadable weight shape")
    weight = reader.tagged(count, layer.name)
    layer.weights["weight"] = weight.reshape(out, count // (out * kernel * kernel_h), kernel_h, kernel)
    if layer.get(5, 0):
        layer.weights["bias"] = reader.floats(out)


def _read_inner_product(layer: Layer, reader: _Reader) -> None:
    out, count = layer.get(0), layer.get(2)
    if out is None or count is None or count % out:
        raise ValueError(f"{reader.path}: {layer.name} has an unreadable weight shape")
    layer.weights["weight"] = reader.tagged(count, layer.name).reshape(out, count // out)
    if layer.get(1, 0):
        layer.weights["bias"] = reader.floats(out)


def _read_scale(layer: Layer, reader: _Reader) -> None:
    count = layer.get(0, 0)
    if count == -233:   # the scale is the second input blob; ncnn then loads nothing
        return
    layer.weights["scale"] = reader.floats(count)
    if layer.get(1, 0):
        layer.weights["bias"] = reader.floats(count)


def read_model(param_path: Path | str, bin_path: Path | str) -> list[Layer]:
    """The layers of `param_path`, each weighted one with its arrays filled from `bin_path`."""
    layers = parse_param(param_path)
    reader = _Reader(Path(bin_path).read_bytes(), bin_path)
    for layer in layers:
        if (layer.type in CONVOLUTIONS or layer.type == "InnerProduct") and layer.get(8, 0):
            raise ValueError(f"{param_path}: {layer.name} computes in int8; only fp16/fp32 are read")
        if layer.type in CONVOLUTIONS:
            _read_convolution(layer, reader)
        elif layer.type == "InnerProduct":
            _read_inner_product(layer, reader)
        elif layer.type == "Scale":
            _read_scale(layer, reader)
        elif layer.type == "PReLU":
            layer.weights["slope"] = reader.floats(layer.get(0, 1))
        elif layer.type not in UNWEIGHTED:
            raise ValueError(f"{param_path}: layer type {layer.type} ({layer.name}) is not supported")
    if reader.pos != len(reader.data):
        raise ValueError(f"{bin_path}: {len(reader.data) - reader.pos} bytes left after the last layer")
    return layers
