"""An ncnn layer graph (engine.runtimes.ncnn_weights) run by torch, layer by layer, as ncnn runs it.

Why an executor rather than a hand-written torch CUNet: the .param file *is* the exact graph
(which blob each crop takes, by how much, where the squeeze-and-excitation gates sit), so running
it says exactly what upstream runs and leaves no architecture to transcribe and get subtly wrong;
the equality with ncnn's own outputs (tests/test_deblock.py) then checks the layer semantics
below once for any net built from them. The loop over layers traces into a plain ONNX graph
(engine.runtimes.compiled), so nothing of it is left at run time. Generic (no model family): the
next ncnn-shipped nets (Real-CUGAN, SRMD) can use it as they are, and it can move to
engine/runtimes once a second capability needs it.

Layer semantics, from ncnn's src/layer/*.cpp (reference implementations):
- Convolution / Deconvolution: params 0 num_output, 1 kernel_w (11 kernel_h), 2 dilation,
  3 stride, 4 pad (only 0 or symmetric >= 0 here), 5 bias, 9 fused activation with 10 its
  parameters (0 none, 1 ReLU, 2 leaky ReLU slope, 3 clip min max, 4 sigmoid). Deconvolution:
  out[i * stride + k] += in[i] * w[k], then its pad is cropped from the output.
- InnerProduct: flattens its input; same bias and activation keys (1 bias, 9 activation).
- Pooling with 4 = global: 0 type (0 max, 1 average) over all of h x w: a [N, C] vector.
- Scale with two inputs (0 = -233): the first blob times the second, one factor per channel.
- Crop with two inputs: the first blob from offset (0 w, 1 h, 2 c) to the second blob's size.
- Eltwise: 0 op (0 product, 1 sum, 2 max); for sums, 1 = coefficients per input.
- Split: the same blob under several names. ReLU (0 slope), Sigmoid.
Anything else raises at build time, not at run time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.runtimes.ncnn_weights import Layer

SUPPORTED = {"Input", "Convolution", "Deconvolution", "InnerProduct", "Pooling", "Scale", "Crop",
             "Eltwise", "Split", "ReLU", "Sigmoid"}


def _activate(x: torch.Tensor, kind: int, params: list) -> torch.Tensor:
    if kind == 0:
        return x
    if kind == 1:
        return F.relu(x)
    if kind == 2:
        return F.leaky_relu(x, float(params[0]))
    if kind == 3:
        return torch.clamp(x, float(params[0]), float(params[1]))
    if kind == 4:
        return torch.sigmoid(x)
    raise ValueError(f"fused activation {kind} is not supported")


def _check(layer: Layer) -> None:
    """Refuse, when the graph is built, what forward does not implement."""
    get = layer.get
    if layer.type not in SUPPORTED:
        raise ValueError(f"{layer.name}: ncnn layer type {layer.type} is not supported")
    if layer.type in ("Convolution", "Deconvolution"):
        pads = {get(4, 0), get(14, get(4, 0)), get(15, get(4, 0)), get(16, get(14, get(4, 0)))}
        if len(pads) != 1 or min(pads) < 0:
            raise ValueError(f"{layer.name}: only equal, explicit paddings are supported (got {pads})")
        if get(7, 1) != 1 or get(18, 0) or get(19, 0) or get(20, 0) or get(21, 0):
            raise ValueError(f"{layer.name}: groups and output paddings/sizes are not supported")
    if layer.type in ("Convolution", "Deconvolution", "InnerProduct") and get(9, 0) not in (0, 1, 2, 3, 4):
        raise ValueError(f"{layer.name}: fused activation {get(9)} is not supported")
    if layer.type == "Pooling" and (not get(4, 0) or get(0, 0) not in (0, 1)):
        raise ValueError(f"{layer.name}: only global max/average pooling is supported")
    if layer.type in ("Scale", "Crop") and len(layer.inputs) != 2:
        raise ValueError(f"{layer.name}: only the two-input {layer.type} is supported")
    if layer.type == "Scale" and (get(0) != -233 or get(1, 0)):
        raise ValueError(f"{layer.name}: only a Scale by its second input, without bias, is supported")
    if layer.type == "Eltwise" and get(0, 1) not in (0, 1, 2):
        raise ValueError(f"{layer.name}: Eltwise op {get(0)} is not supported")


class NcnnGraph(nn.Module):
    """[N, C, H, W] float32 -> the blob `output` (default: the last layer's first output).

    One input (the Input layer's blob). Weights become parameters named `<index>_<key>`
    (the layer's position in the .param file), so state dicts and weight hashes are stable."""

    def __init__(self, layers: list[Layer], output: str | None = None):
        super().__init__()
        for layer in layers:
            _check(layer)
        inputs = [layer for layer in layers if layer.type == "Input"]
        if len(inputs) != 1:
            raise ValueError(f"an ncnn graph with {len(inputs)} inputs; exactly one is supported")
        self.layers = layers
        self.input = inputs[0].outputs[0]
        self.output = output or layers[-1].outputs[0]
        self.params = nn.ParameterDict()
        for index, layer in enumerate(layers):
            for key, array in layer.weights.items():
                value = torch.from_numpy(array.copy())
                if layer.type == "Deconvolution" and key == "weight":
                    value = value.transpose(0, 1).contiguous()   # torch: [in, out, kh, kw]
                self.params[f"{index}_{key}"] = nn.Parameter(value, requires_grad=False)

    def _weights(self, index: int, layer: Layer):
        bias = self.params[f"{index}_bias"] if f"{index}_bias" in self.params else None
        return self.params[f"{index}_weight"], bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blobs = {self.input: x}
        for index, layer in enumerate(self.layers):
            if layer.type == "Input":
                continue
            args = [blobs[name] for name in layer.inputs]
            blobs.update(zip(layer.outputs, self._run(index, layer, args)))
        return blobs[self.output]

    def _run(self, index: int, layer: Layer, args: list[torch.Tensor]) -> list[torch.Tensor]:
        get, kind = layer.get, layer.type
        if kind == "Split":
            return [args[0]] * len(layer.outputs)
        x = args[0]
        if kind == "Convolution":
            weight, bias = self._weights(index, layer)
            stride, dilation = (get(13, get(3, 1)), get(3, 1)), (get(12, get(2, 1)), get(2, 1))
            out = F.conv2d(x, weight, bias, stride=stride, padding=get(4, 0), dilation=dilation)
            return [_activate(out, get(9, 0), get(10, []))]
        if kind == "Deconvolution":
            weight, bias = self._weights(index, layer)
            stride, dilation = (get(13, get(3, 1)), get(3, 1)), (get(12, get(2, 1)), get(2, 1))
            # conv_transpose2d's padding crops the output as ncnn's pad does.
            out = F.conv_transpose2d(x, weight, bias, stride=stride, padding=get(4, 0), dilation=dilation)
            return [_activate(out, get(9, 0), get(10, []))]
        if kind == "InnerProduct":
            weight, bias = self._weights(index, layer)
            return [_activate(F.linear(x.flatten(1), weight, bias), get(9, 0), get(10, []))]
        if kind == "Pooling":
            return [x.amax(dim=(2, 3)) if get(0, 0) == 0 else x.mean(dim=(2, 3))]
        if kind == "Scale":
            return [x * args[1].reshape(x.shape[0], -1, 1, 1)]
        if kind == "Crop":
            ref = args[1]
            w0, h0, c0 = get(0, 0), get(1, 0), get(2, 0)
            return [x[:, c0:c0 + ref.shape[1], h0:h0 + ref.shape[2], w0:w0 + ref.shape[3]]]
        if kind == "Eltwise":
            op = get(0, 1)
            if op == 0:
                out = args[0]
                for other in args[1:]:
                    out = out * other
                return [out]
            if op == 2:
                out = args[0]
                for other in args[1:]:
                    out = torch.maximum(out, other)
                return [out]
            coeffs = get(1) or [1.0] * len(args)
            out = args[0] * coeffs[0] if coeffs[0] != 1 else args[0]
            for coeff, other in zip(coeffs[1:], args[1:]):
                out = out + (other * coeff if coeff != 1 else other)
            return [out]
        if kind == "ReLU":
            return [F.leaky_relu(x, float(get(0, 0.0))) if get(0, 0.0) else F.relu(x)]
        if kind == "Sigmoid":
            return [torch.sigmoid(x)]
        raise ValueError(f"{layer.name}: ncnn layer type {kind} is not supported")   # _check refused it already
