"""A float TensorFlow Lite graph as a torch module: its weights read from the .tflite file
(reader.py), TFLite's semantics (ops.py).

`TFLiteGraph` walks the model's operator list in order, as the TFLite interpreter does. Weights
become torch buffers once, at construction: constants behind DEQUANTIZE / DENSIFY are folded
(float16 to float32, int8 with its scales, sparse to dense; as LiteRT's XNNPACK delegate does at
load), int8 weights read directly by an operator (dynamic-range "hybrid" models) are dequantized
here too, so the net runs in float32 where LiteRT quantizes the activations on the fly (the
difference is the models' stated tolerance, tests/test_tflite_models.py). Convolution filters move
from TFLite's OHWI to torch's OIHW. 4-D activations run NCHW inside; the graph's NHWC inputs are
permuted once on the way in and its 4-D outputs once on the way out. Activations must be float:
fully quantized graphs (int8 activations) are refused.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import ops
from .ops import AXIS_NCHW, UnsupportedGraph, from_nhwc, to_nhwc
from .reader import Model, Operator

_FOLDED = ("DEQUANTIZE", "DENSIFY")  # constant in, constant out: done once, at load
_ELEMENTWISE = {"ADD": torch.add, "SUB": torch.sub, "MUL": torch.mul, "DIV": torch.div,
                "MAXIMUM": torch.maximum, "MINIMUM": torch.minimum}
_UNARY = {"RELU": torch.relu, "RELU6": ops.activation("RELU6"), "RELU_N1_TO_1": ops.activation("RELU_N1_TO_1"),
          "TANH": torch.tanh, "LOGISTIC": torch.sigmoid,
          "HARD_SWISH": F.hardswish}  # x * relu6(x + 3) / 6, as TFLite defines it


@dataclass
class _Step:
    op: Operator
    run: Callable[..., torch.Tensor]   # takes the runtime input tensors, in order
    inputs: list[int]                  # the runtime (non-constant) inputs, tensor indices
    output: int


class TFLiteGraph(torch.nn.Module):
    """A float TFLite graph as a torch module. forward takes the graph's inputs in the file's
    order and layout (NHWC images, float32) and returns its outputs in the file's order and
    layout: one tensor for a one-output graph, else a tuple. `input_names` / `output_names` and
    `input_shapes` / `output_shapes` describe them as the file does."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model
        self.input_indices, self.output_indices = list(model.inputs), list(model.outputs)
        tensors = model.tensors
        self.input_names = [tensors[i].name for i in self.input_indices]
        self.output_names = [tensors[i].name for i in self.output_indices]
        self.input_shapes = [tensors[i].shape for i in self.input_indices]
        self.output_shapes = [tensors[i].shape for i in self.output_indices]
        self.constants: dict[int, np.ndarray] = {t.index: self._constant(t) for t in tensors
                                                 if t.data is not None}
        self.steps: list[_Step] = []
        for op in model.operators:
            if op.name in _FOLDED and all(i in self.constants for i in op.inputs if i >= 0):
                self.constants[op.outputs[0]] = self._fold(op)
                continue
            for i in op.outputs:
                if tensors[i].dtype not in (np.float32,):
                    raise UnsupportedGraph(f"{op.name} #{op.index}: {tensors[i].dtype.__name__} "
                                           "activations (only float graphs are run)")
            self.steps.append(self._compile(op))
        del self.constants  # now torch buffers, in the layout each op wants
        # When each activation is last read: dropped after it, to keep the peak small.
        self._last_use = {i: k for k, step in enumerate(self.steps) for i in step.inputs}

    @property
    def input_index(self) -> int:  # the one-input graphs' input (the selfie segmenter's use)
        return self.input_indices[0]

    # ------------------------------------------------------------------ constants
    @staticmethod
    def _constant(tensor) -> np.ndarray:
        data = tensor.data
        if tensor.quantization is not None and data.dtype in (np.int8, np.uint8, np.int16):
            return tensor.quantization.dequantize(data)  # hybrid weights: float from here on
        return data

    def _fold(self, op: Operator) -> np.ndarray:
        value = self.constants[op.inputs[0]]
        if op.name == "DEQUANTIZE" and value.dtype != np.float32:
            return value.astype(np.float32)  # int8 ones were dequantized when read
        return value  # DENSIFY: the reader already made the constant dense

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

    def _rank(self, index: int) -> int:
        return len(self.model.tensors[index].shape)

    def _operand(self, op: Operator, slot: int) -> str:
        """A constant operand of an elementwise op, laid out to broadcast against the output as
        TFLite's NHWC broadcasting does (a 4-D output runs NCHW: the constant is transposed)."""
        value = self._const(op, slot).astype(np.float32)
        if self._rank(op.outputs[0]) == 4:
            value = value.reshape((1,) * (4 - value.ndim) + value.shape).transpose(0, 3, 1, 2)
        return self._weight(op, f"operand{slot}", value)

    # ------------------------------------------------------------------ compile
    def _compile(self, op: Operator) -> _Step:
        o, get, name = op.options, self.__getattr__, op.name
        runtime = [i for i in op.inputs if i >= 0 and i not in self.constants]
        out_rank = self._rank(op.outputs[0])
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            filt = self._const(op, 1)
            depthwise = name == "DEPTHWISE_CONV_2D"
            # OHWI -> OIHW; depthwise 1HW(C*m) -> (C*m)1HW, output channel c*m + k as in torch
            weight = filt[0].transpose(2, 0, 1)[:, None] if depthwise else filt.transpose(0, 3, 1, 2)
            w, b = self._weight(op, "weight", weight), self._bias(op, 2)
            act = ops.activation(o["fused_activation_function"])
            stride, dilation = (o["stride_h"], o["stride_w"]), (o["dilation_h_factor"], o["dilation_w_factor"])

            def run(x):
                g = x.shape[1] if depthwise else 1
                return act(ops.conv(x, get(w), get(b) if b else None, o["padding"], stride, dilation, g))
        elif name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            act = ops.activation(o["fused_activation_function"])

            def run(x):
                return act(ops.pool(x, o, name == "MAX_POOL_2D"))
        elif name in _ELEMENTWISE:
            fn, act = _ELEMENTWISE[name], ops.activation(o.get("fused_activation_function", "NONE"))
            operands = [None if i in runtime else self._operand(op, k) for k, i in enumerate(op.inputs)]

            def run(*xs):
                it = iter(xs)
                a, b = (_lift(next(it), out_rank) if key is None else get(key) for key in operands)
                return act(fn(a, b))
        elif name in _UNARY:
            run = _UNARY[name]
        elif name == "PRELU":  # x >= 0 ? x : alpha * x, alpha broadcast like a MUL operand
            alpha = self._operand(op, 1)
            shape = tuple(get(alpha).shape)
            if out_rank == 4 and shape[0] == 1 and shape[2:] == (1, 1):  # per channel: torch's PReLU
                slope = self._weight(op, "slope", get(alpha).reshape(-1).numpy())
                run = lambda x: F.prelu(x, get(slope))  # noqa: E731 - ONNX PRelu, one kernel
            else:
                run = lambda x: torch.where(x >= 0, x, x * get(alpha))  # noqa: E731
        elif name == "LEAKY_RELU":
            run = lambda x: F.leaky_relu(x, o["alpha"])  # noqa: E731
        elif name == "RESIZE_BILINEAR":
            size = tuple(int(v) for v in self._const(op, 1))
            if o["align_corners"] and o["half_pixel_centers"]:
                raise UnsupportedGraph("RESIZE_BILINEAR with align_corners and half_pixel_centers")

            def run(x):
                return ops.resize_bilinear(x, size, o["align_corners"], o["half_pixel_centers"])
        elif name == "MEAN":
            axes = sorted({int(a) % self._rank(op.inputs[0]) for a in self._const(op, 1).reshape(-1)})
            if o["keep_dims"] and out_rank == 4:
                dims = sorted(AXIS_NCHW[a] for a in axes)
                run = lambda x: x.mean(dim=dims, keepdim=True)  # noqa: E731
            else:
                run = lambda x: from_nhwc(to_nhwc(x).mean(dim=axes, keepdim=o["keep_dims"]))  # noqa: E731
        elif name == "CONCATENATION":
            if len(runtime) != len(op.inputs):
                raise UnsupportedGraph("CONCATENATION of a constant")
            act = ops.activation(o["fused_activation_function"])
            axis = AXIS_NCHW[o["axis"] % 4] if out_rank == 4 else o["axis"] % out_rank
            run = lambda *xs: act(torch.cat(xs, dim=axis))  # noqa: E731
        elif name == "RESHAPE":  # to the output's static shape, in TFLite's (NHWC) element order
            shape = (-1,) + tuple(self.model.tensors[op.outputs[0]].shape[1:])
            run = lambda x: from_nhwc(to_nhwc(x).reshape(shape))  # noqa: E731
            runtime = runtime[:1]
        elif name in ("PAD", "PADV2"):
            paddings = self._const(op, 1)
            value = float(self._const(op, 2).reshape(-1)[0]) if name == "PADV2" and len(op.inputs) > 2 else 0.0
            run = lambda x: ops.pad(x, paddings, value)  # noqa: E731
        elif name == "FULLY_CONNECTED":
            run = self._compile_fully_connected(op)
        elif name == "SOFTMAX":
            beta, dim = o["beta"], 1 if out_rank == 4 else -1
            run = lambda x: torch.softmax(x * beta if beta != 1.0 else x, dim=dim)  # noqa: E731
        elif name == "DEPTH_TO_SPACE":
            run = lambda x: ops.depth_to_space(x, o["block_size"])  # noqa: E731
        elif name == "STRIDED_SLICE":
            begin, end, strides = (self._const(op, k).tolist() for k in (1, 2, 3))
            run = lambda x: ops.strided_slice(x, begin, end, strides, o)  # noqa: E731
        elif name in ("Convolution2DTransposeBias", "TRANSPOSE_CONV"):
            run = self._compile_transpose_conv(op)
            runtime = [op.inputs[0] if name != "TRANSPOSE_CONV" else op.inputs[2]]
        elif name in ("Landmarks2TransformMatrix", "TransformTensorBilinear", "TransformLandmarks"):
            run = self._compile_mediapipe(op)
        else:
            raise UnsupportedGraph(f"operator {name} (#{op.index})")
        if len(op.outputs) != 1:
            raise UnsupportedGraph(f"{name} #{op.index}: {len(op.outputs)} outputs")
        return _Step(op, run, runtime, op.outputs[0])

    def _compile_fully_connected(self, op: Operator):
        o, get = op.options, self.__getattr__
        if o["weights_format"]:
            raise UnsupportedGraph(f"FULLY_CONNECTED #{op.index}: shuffled weights")
        w, b = self._weight(op, "weight", self._const(op, 1)), self._bias(op, 2)
        act = ops.activation(o["fused_activation_function"])
        out_shape = self.model.tensors[op.outputs[0]].shape

        def run(x):
            x = to_nhwc(x)
            y = act(F.linear(x.reshape(-1, x.shape[-1]) if not o["keep_num_dims"] else x,
                             get(w), get(b) if b else None))
            return from_nhwc(y.reshape((-1,) + tuple(out_shape[1:])))
        return run

    def _compile_transpose_conv(self, op: Operator):
        get = self.__getattr__
        if op.name == "TRANSPOSE_CONV":  # inputs: output_shape, weights, input, (bias)
            o = op.options
            same, stride = o["padding"] == "SAME", (o["stride_h"], o["stride_w"])
            act = ops.activation(o.get("fused_activation_function", "NONE"))
            w, b = self._weight(op, "weight", self._const(op, 1).transpose(3, 0, 1, 2)), self._bias(op, 3)
            want = tuple(int(v) for v in self._const(op, 0))
        else:  # MediaPipe's: inputs input, weights, bias; options TfLiteTransposeConvParams
            padding, stride_w, stride_h = struct.unpack_from("<iii", op.custom_options)
            same, stride, act, want = padding == 1, (stride_h, stride_w), (lambda x: x), None
            if padding not in (1, 2):  # kTfLitePaddingSame, kTfLitePaddingValid
                raise UnsupportedGraph(f"{op.name}: padding {padding}")
            w, b = self._weight(op, "weight", self._const(op, 1).transpose(3, 0, 1, 2)), self._bias(op, 2)

        def run(x):
            y = act(ops.transpose_conv(x, get(w), get(b) if b else None, same, stride))
            if want is not None and (want[1], want[2]) != tuple(y.shape[2:]):
                raise UnsupportedGraph(f"TRANSPOSE_CONV to {want}: output {tuple(y.shape)}")
            return y
        return run

    def _compile_mediapipe(self, op: Operator):
        """MediaPipe's landmark custom ops, the versions face_landmark_with_attention uses."""
        if op.version != 2 or any(i in self.constants for i in op.inputs):
            raise UnsupportedGraph(f"{op.name} version {op.version} (#{op.index})")
        if op.name == "Landmarks2TransformMatrix":
            options = op.flex_options()
            return lambda landmarks: ops.landmarks_to_transform_matrix(landmarks, options)
        if op.name == "TransformTensorBilinear":
            _, height, width, _ = self.model.tensors[op.outputs[0]].shape
            return lambda x, matrix: ops.transform_tensor_bilinear(x, matrix, height, width)
        return ops.transform_landmarks

    # ------------------------------------------------------------------ run
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_indices):
            raise TypeError(f"{len(self.input_indices)} inputs expected ({self.input_names}), "
                            f"{len(inputs)} given")
        values = {i: from_nhwc(x) for i, x in zip(self.input_indices, inputs)}
        for k, step in enumerate(self.steps):
            values[step.output] = step.run(*(values[i] for i in step.inputs))
            for i in step.inputs:
                if self._last_use.get(i) == k and i not in self.output_indices:
                    values.pop(i, None)  # (an op may read one tensor twice: x + x)
        outs = tuple(to_nhwc(values[i]) for i in self.output_indices)
        return outs[0] if len(outs) == 1 else outs


def _lift(x: torch.Tensor, rank: int) -> torch.Tensor:
    """A runtime operand of lower rank than a 4-D output: broadcast as NHWC, held NCHW."""
    if rank == 4 and x.dim() < 4:
        return from_nhwc(x.reshape((1,) * (4 - x.dim()) + tuple(x.shape)))
    return x
