"""The MediaPipe selfie segmenter in torch: a generic executor of a float TensorFlow Lite graph,
its weights read from the .tflite file (tflite_reader), with TensorFlow Lite's semantics.

`TFLiteGraph` walks the model's operator list in order, as the TFLite interpreter does. Weights
become torch tensors once, at construction: float16 constants behind DEQUANTIZE are folded to
float32 (as LiteRT's XNNPACK delegate does), convolution filters are moved from TFLite's OHWI to
torch's OIHW. Activations flow as NCHW; the graph's NHWC input is permuted once on the way in and
its outputs once on the way out. What TFLite defines and torch does differently is done by hand:
SAME padding (the odd pixel goes after, so the padding may be asymmetric), average pooling that
leaves padded pixels out of the count, RESIZE_BILINEAR's align_corners / half_pixel_centers /
legacy sampling, and MediaPipe's custom op Convolution2DTransposeBias (a transposed convolution
with bias, cropped as mediapipe/util/tflite/operations/transpose_conv_bias.cc does).

`Segmenter` wraps it for the Background capability (tabs/background/model.py): one preprocessed
image in, P(person) out; `Segmenter.accelerate` exports the module to ONNX once (cached by weights
hash and versions, engine/runtimes/compiled.py) and runs it on ONNX Runtime, eager torch where
that fails. tests/test_selfie_torch.py holds it to LiteRT's outputs, stored in
tests/data/selfie_litert_reference.npz.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tabs.background.tflite_reader import Model, Operator, read_model

# NHWC axis -> NCHW axis, for the ops with an axis argument on 4-D activations.
_AXIS_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}


class UnsupportedGraph(NotImplementedError):
    """The .tflite graph uses an operator or option this executor does not implement."""


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "NONE":
        return lambda x: x
    if name == "RELU":
        return torch.relu
    if name == "RELU6":
        return lambda x: torch.clamp(x, 0.0, 6.0)
    if name == "RELU_N1_TO_1":
        return lambda x: torch.clamp(x, -1.0, 1.0)
    if name == "TANH":
        return torch.tanh
    raise UnsupportedGraph(f"fused activation {name}")


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite's SAME padding of one axis: (before, after), the odd pixel after."""
    out = (size + stride - 1) // stride
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pad_for(x: torch.Tensor, padding: str, kernel: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int] = (1, 1)) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) for an NCHW input; zeros for VALID."""
    if padding == "VALID":
        return (0, 0, 0, 0)
    if padding != "SAME":
        raise UnsupportedGraph(f"padding {padding}")
    top, bottom = _same_padding(x.shape[2], kernel[0], stride[0], dilation[0])
    left, right = _same_padding(x.shape[3], kernel[1], stride[1], dilation[1])
    return (left, right, top, bottom)


def _conv(x, weight, bias, padding, stride, dilation, groups):
    left, right, top, bottom = _pad_for(x, padding, weight.shape[2:], stride, dilation)
    if left == right and top == bottom:
        return F.conv2d(x, weight, bias, stride, (top, left), dilation, groups)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride, 0, dilation, groups)


def _pool(x, op: Operator):
    o = op.options
    kernel, stride = (o["filter_height"], o["filter_width"]), (o["stride_h"], o["stride_w"])
    pads = _pad_for(x, o["padding"], kernel, stride)
    if op.name == "MAX_POOL_2D":
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")) if any(pads) else x, kernel, stride)
    if not any(pads):
        return F.avg_pool2d(x, kernel, stride)
    # TFLite divides by the pixels inside the image only: sum over the window / that count.
    total = F.avg_pool2d(F.pad(x, pads), kernel, stride, divisor_override=1)
    ones = F.pad(torch.ones_like(x[:1, :1]), pads)
    return total / F.avg_pool2d(ones, kernel, stride, divisor_override=1)


def _source_coordinates(out_size: int, in_size: int, align_corners: bool, half_pixel: bool, device):
    """Per output index along one axis: (low index, high index, weight of high), as TFLite's
    reference resize_bilinear computes them."""
    if align_corners and out_size > 1:
        scale = (in_size - 1) / (out_size - 1)
    else:
        scale = in_size / out_size
    pos = torch.arange(out_size, dtype=torch.float32, device=device)
    src = (pos + 0.5) * scale - 0.5 if half_pixel else pos * scale
    low = torch.floor(src)
    frac = src - low
    low_i = low.to(torch.int64)
    high = torch.clamp(low_i + 1, max=in_size - 1)  # ceil(src) where src is not whole
    high = torch.where(frac > 0, high, torch.clamp(low_i, 0, in_size - 1))
    return torch.clamp(low_i, 0, in_size - 1), high, frac


def _resize_bilinear(x, size: tuple[int, int], align_corners: bool, half_pixel: bool):
    """TFLite's RESIZE_BILINEAR. Half-pixel centres and aligned corners are torch's own two
    modes (the same sampling, edges clamped alike): its fast kernel. TFLite's legacy mode (neither
    flag: source = out * in / out, no offset) has none in torch and is gathered by hand."""
    if half_pixel or align_corners:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    height, width = size
    y0, y1, fy = _source_coordinates(height, x.shape[2], align_corners, half_pixel, x.device)
    x0, x1, fx = _source_coordinates(width, x.shape[3], align_corners, half_pixel, x.device)
    fy, fx = fy.view(1, 1, -1, 1), fx.view(1, 1, 1, -1)
    top, bottom = x[:, :, y0], x[:, :, y1]
    top = top[..., x0] * (1 - fx) + top[..., x1] * fx
    bottom = bottom[..., x0] * (1 - fx) + bottom[..., x1] * fx
    return top * (1 - fy) + bottom * fy


def _transpose_conv(x, weight, bias, same: bool, stride: tuple[int, int]):
    """TFLite / MediaPipe transposed convolution: weight (in, out, kH, kW) for torch, output
    cropped from the full one: SAME pads max(0, k - (in - 1) % s - 1) per axis, half before."""
    full = F.conv_transpose2d(x, weight, bias, stride)
    crops = []
    for axis, s in zip((2, 3), stride):
        k, size = weight.shape[axis], x.shape[axis]
        total = max(0, k - (size - 1) % s - 1) if same else 0
        crops.append((total // 2, s * (size - 1) + k - total))
    (top, h), (left, w) = crops
    return full[:, :, top:top + h, left:left + w]


@dataclass
class _Step:
    op: Operator
    run: Callable[..., torch.Tensor]   # takes the runtime input tensors, in order
    inputs: list[int]                  # the runtime (non-constant) inputs, tensor indices
    output: int


class TFLiteGraph(torch.nn.Module):
    """A float TFLite graph (one input, its outputs) as a torch module. forward takes and returns
    NHWC tensors, as the .tflite graph does; everything inside runs NCHW."""

    def __init__(self, model: Model):
        super().__init__()
        if len(model.inputs) != 1:
            raise UnsupportedGraph(f"{len(model.inputs)} graph inputs: one is supported")
        self.model = model
        self.input_index, self.output_indices = model.inputs[0], list(model.outputs)
        self.constants: dict[int, np.ndarray] = {
            t.index: t.data for t in model.tensors if t.data is not None}
        self.steps: list[_Step] = []
        for op in model.operators:
            if op.name == "DEQUANTIZE" and op.inputs[0] in self.constants:
                self.constants[op.outputs[0]] = self.constants[op.inputs[0]].astype(np.float32)
                continue
            self.steps.append(self._compile(op))
        del self.constants  # now torch buffers, in the layout each op wants
        # When each activation is last read: dropped after it, to keep the peak small.
        self._last_use = {i: k for k, step in enumerate(self.steps) for i in step.inputs}

    # ------------------------------------------------------------------ weights
    def _weight(self, op: Operator, name: str, array: np.ndarray) -> str:
        """Registers a float32 buffer (moved by .to(device)); its attribute name."""
        key = f"op{op.index}_{name}"
        self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))
        return key

    def _const(self, op: Operator, slot: int) -> np.ndarray:
        index = op.inputs[slot]
        if index not in self.constants:
            raise UnsupportedGraph(f"{op.name} #{op.index}: input {slot} must be a constant")
        return self.constants[index]

    def _bias(self, op: Operator, slot: int) -> str | None:
        if len(op.inputs) <= slot or op.inputs[slot] < 0:
            return None
        return self._weight(op, "bias", self._const(op, slot).reshape(-1))

    def _elementwise_operand(self, op: Operator, slot: int) -> str:
        """A constant operand of an elementwise op, laid out NCHW to broadcast like NHWC."""
        value = self._const(op, slot).astype(np.float32)
        if value.ndim == 4:
            value = value.transpose(0, 3, 1, 2)
        elif value.ndim == 1 and value.size > 1:
            value = value.reshape(1, -1, 1, 1)  # the last NHWC axis: channels
        elif value.ndim not in (0, 1):
            raise UnsupportedGraph(f"{op.name} #{op.index}: constant of rank {value.ndim}")
        return self._weight(op, f"operand{slot}", value)

    # ------------------------------------------------------------------ compile
    def _compile(self, op: Operator) -> _Step:
        o, get = op.options, self.__getattr__
        runtime = [i for i in op.inputs if i >= 0 and i not in self.constants]
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            filt = self._const(op, 1)
            depthwise = op.name == "DEPTHWISE_CONV_2D"
            # OHWI -> OIHW; depthwise 1HW(C*m) -> (C*m)1HW, output channel c*m + k as in torch
            weight = filt[0].transpose(2, 0, 1)[:, None] if depthwise else filt.transpose(0, 3, 1, 2)
            w, b = self._weight(op, "weight", weight), self._bias(op, 2)
            act = _activation(o["fused_activation_function"])
            stride, dilation = (o["stride_h"], o["stride_w"]), (o["dilation_h_factor"], o["dilation_w_factor"])

            def run(x):
                g = x.shape[1] if depthwise else 1
                return act(_conv(x, get(w), get(b) if b else None, o["padding"], stride, dilation, g))
        elif op.name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            act = _activation(o["fused_activation_function"])

            def run(x):
                return act(_pool(x, op))
        elif op.name in ("ADD", "SUB", "MUL", "DIV"):
            fn = {"ADD": torch.add, "SUB": torch.sub, "MUL": torch.mul, "DIV": torch.div}[op.name]
            act = _activation(o["fused_activation_function"])
            operands = [None if i in runtime else self._elementwise_operand(op, k)
                        for k, i in enumerate(op.inputs)]

            def run(*xs):
                it = iter(xs)
                a, b = (next(it) if key is None else get(key) for key in operands)
                return act(fn(a, b))
        elif op.name in ("RELU", "RELU6", "RELU_N1_TO_1", "TANH"):
            run = _activation(op.name)
        elif op.name == "LOGISTIC":
            run = torch.sigmoid
        elif op.name == "HARD_SWISH":
            run = F.hardswish  # x * relu6(x + 3) / 6, as TFLite defines it
        elif op.name == "RESIZE_BILINEAR":
            size = tuple(int(v) for v in self._const(op, 1))
            if o["align_corners"] and o["half_pixel_centers"]:
                raise UnsupportedGraph("RESIZE_BILINEAR with align_corners and half_pixel_centers")

            def run(x):
                return _resize_bilinear(x, size, o["align_corners"], o["half_pixel_centers"])
        elif op.name == "MEAN":  # the landscape model's global average pool
            if not o["keep_dims"]:
                raise UnsupportedGraph("MEAN without keep_dims (the result would leave NHWC)")
            dims = sorted({_AXIS_NCHW[int(a) % 4] for a in self._const(op, 1).reshape(-1)})

            def run(x):
                return x.mean(dim=dims, keepdim=True)
        elif op.name == "CONCATENATION":
            if len(runtime) != len(op.inputs):
                raise UnsupportedGraph("CONCATENATION of a constant")
            act = _activation(o["fused_activation_function"])
            axis = _AXIS_NCHW[o["axis"] % 4]

            def run(*xs):
                return act(torch.cat(xs, dim=axis))
        elif op.name in ("Convolution2DTransposeBias", "TRANSPOSE_CONV"):
            run = self._compile_transpose_conv(op)
            runtime = [op.inputs[0] if op.name != "TRANSPOSE_CONV" else op.inputs[2]]
        else:
            raise UnsupportedGraph(f"operator {op.name} (#{op.index})")
        if len(op.outputs) != 1:
            raise UnsupportedGraph(f"{op.name} #{op.index}: {len(op.outputs)} outputs")
        return _Step(op, run, runtime, op.outputs[0])

    def _compile_transpose_conv(self, op: Operator):
        get = self.__getattr__
        if op.name == "TRANSPOSE_CONV":  # inputs: output_shape, weights, input, (bias)
            o = op.options
            same, stride = o["padding"] == "SAME", (o["stride_h"], o["stride_w"])
            act = _activation(o.get("fused_activation_function", "NONE"))
            w, b = self._weight(op, "weight", self._const(op, 1).transpose(3, 0, 1, 2)), self._bias(op, 3)
            want = tuple(int(v) for v in self._const(op, 0))
        else:  # MediaPipe's: inputs input, weights, bias; options TfLiteTransposeConvParams
            padding, stride_w, stride_h = struct.unpack_from("<iii", op.custom_options)
            same, stride, act, want = padding == 1, (stride_h, stride_w), (lambda x: x), None
            if padding not in (1, 2):  # kTfLitePaddingSame, kTfLitePaddingValid
                raise UnsupportedGraph(f"{op.name}: padding {padding}")
            w, b = self._weight(op, "weight", self._const(op, 1).transpose(3, 0, 1, 2)), self._bias(op, 2)

        def run(x):
            y = act(_transpose_conv(x, get(w), get(b) if b else None, same, stride))
            if want is not None and (want[1], want[2]) != tuple(y.shape[2:]):
                raise UnsupportedGraph(f"TRANSPOSE_CONV to {want}: output {tuple(y.shape)}")
            return y
        return run

    # ------------------------------------------------------------------ run
    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        values = {self.input_index: x.permute(0, 3, 1, 2)}
        for k, step in enumerate(self.steps):
            values[step.output] = step.run(*(values[i] for i in step.inputs))
            for i in step.inputs:
                if self._last_use.get(i) == k and i not in self.output_indices:
                    values.pop(i, None)  # (an op may read one tensor twice: x + x)
        outs = tuple(values[i].permute(0, 2, 3, 1) for i in self.output_indices)
        return outs[0] if len(outs) == 1 else outs


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
