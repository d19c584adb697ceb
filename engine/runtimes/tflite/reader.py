"""Read a TensorFlow Lite model (.tflite) without TensorFlow or LiteRT: its tensors, constant
weights and operators, as plain Python and numpy.

A .tflite file is a FlatBuffer of TensorFlow Lite's schema.fbs (root table `Model`, file
identifier "TFL3"). The tables are walked with the `flatbuffers` runtime library (Google's, pure
Python, already installed as a dependency of onnxruntime); the few tables a float CNN needs are
described here by their field slots, as schema.fbs numbers them, instead of pulling in the
generated classes of the `tflite` PyPI package for them. Only what the torch rebuilds need is
read: the first subgraph, tensor shapes, types and data (inline or, for files over 2 GB, stored
after the FlatBuffer), operator codes (builtin and custom), inputs, outputs and the options of the
operators listed in OPTION_FIELDS. Quantized tensors other than float16 weights are refused.
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field

import numpy as np
from flatbuffers import encode, number_types as nt, packer
from flatbuffers.table import Table

# BuiltinOperator codes of schema.fbs that the CNNs use (and a few near them, for clear errors).
BUILTIN_NAMES = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D",
    18: "MUL", 19: "RELU", 20: "RELU_N1_TO_1", 21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR",
    25: "SOFTMAX", 28: "TANH", 32: "CUSTOM", 34: "PAD", 39: "TRANSPOSE", 40: "MEAN", 41: "SUB",
    42: "DIV", 54: "PRELU", 55: "MAXIMUM", 57: "MINIMUM", 60: "PADV2", 67: "TRANSPOSE_CONV",
    97: "RESIZE_NEAREST_NEIGHBOR", 98: "LEAKY_RELU", 117: "HARD_SWISH",
}

# TensorType of schema.fbs -> numpy dtype (little-endian, as the format stores them).
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
          7: np.int16, 9: np.int8, 10: np.float64}

PADDING = {0: "SAME", 1: "VALID"}
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}

_B, _I, _BOOL, _F = "byte", "int", "bool", "float"
_PAD, _ACT = "padding", "activation"
# Each operator's options table, its fields in schema.fbs order (slot i is field i), with the
# schema's defaults. Fields not listed after the last one named here are not read.
_CONV = [("padding", _PAD, 0), ("stride_w", _I, 0), ("stride_h", _I, 0),
         ("fused_activation_function", _ACT, 0), ("dilation_w_factor", _I, 1),
         ("dilation_h_factor", _I, 1)]
_POOL = [("padding", _PAD, 0), ("stride_w", _I, 0), ("stride_h", _I, 0), ("filter_width", _I, 0),
         ("filter_height", _I, 0), ("fused_activation_function", _ACT, 0)]
_ACT_ONLY = [("fused_activation_function", _ACT, 0)]
_RESIZE = [("new_height", _I, 0), ("new_width", _I, 0), ("align_corners", _BOOL, False),
           ("half_pixel_centers", _BOOL, False)]
OPTION_FIELDS = {
    "CONV_2D": _CONV,
    "DEPTHWISE_CONV_2D": _CONV[:3] + [("depth_multiplier", _I, 0)] + _CONV[3:],
    "AVERAGE_POOL_2D": _POOL, "MAX_POOL_2D": _POOL,
    "ADD": _ACT_ONLY, "SUB": _ACT_ONLY, "MUL": _ACT_ONLY, "DIV": _ACT_ONLY,
    "CONCATENATION": [("axis", _I, 0), ("fused_activation_function", _ACT, 0)],
    "RESIZE_BILINEAR": _RESIZE, "RESIZE_NEAREST_NEIGHBOR": _RESIZE[2:],
    "TRANSPOSE_CONV": _CONV[:4],
    "MEAN": [("keep_dims", _BOOL, False)],
    "SOFTMAX": [("beta", _F, 0.0)],
    "LEAKY_RELU": [("alpha", _F, 0.0)],
}
_FLAGS = {_B: nt.Int8Flags, _PAD: nt.Int8Flags, _ACT: nt.Int8Flags, _BOOL: nt.BoolFlags,
          _I: nt.Int32Flags, _F: nt.Float32Flags}


class TFLiteFormatError(ValueError):
    """The file is not a TensorFlow Lite model this reader understands."""


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None  # the constant's values in `shape`, None for activations


@dataclass
class Operator:
    index: int
    name: str               # the builtin's name ("CONV_2D") or a custom op's code
    inputs: list[int]       # tensor indices; -1 for an optional input left out
    outputs: list[int]
    options: dict = field(default_factory=dict)  # parsed builtin options (OPTION_FIELDS)
    custom_options: bytes = b""                  # a custom op's raw options
    builtin: bool = True


@dataclass
class Model:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    description: str = ""

    def op_names(self) -> list[str]:
        return [op.name for op in self.operators]


# ------------------------------------------------------------------------- flatbuffer access

def _table(buf: bytearray, pos: int) -> Table:
    return Table(buf, pos)


def _slot(tab: Table, i: int) -> int:
    """The field's offset inside the table (0 when absent): slot i sits at vtable byte 4 + 2i."""
    return tab.Offset(4 + 2 * i)


def _scalar(tab: Table, i: int, flags, default):
    o = _slot(tab, i)
    return tab.Get(flags, tab.Pos + o) if o else default


def _string(tab: Table, i: int) -> str:
    o = _slot(tab, i)
    return tab.String(tab.Pos + o).decode("utf-8", "replace") if o else ""


def _numbers(tab: Table, i: int, flags) -> np.ndarray:
    o = _slot(tab, i)
    if not o:
        return np.zeros(0, dtype=nt.to_numpy_type(flags))
    return tab.GetVectorAsNumpy(flags, o)


def _tables(tab: Table, i: int) -> list[Table]:
    o = _slot(tab, i)
    if not o:
        return []
    start, n = tab.Vector(o), tab.VectorLen(o)
    return [_table(tab.Bytes, tab.Indirect(start + 4 * k)) for k in range(n)]


def _subtable(tab: Table, i: int) -> Table | None:
    o = _slot(tab, i)
    return _table(tab.Bytes, tab.Indirect(tab.Pos + o)) if o else None


def _options(tab: Table | None, fields) -> dict:
    out = {}
    for i, (name, kind, default) in enumerate(fields):
        value = _scalar(tab, i, _FLAGS[kind], default) if tab is not None else default
        if kind == _PAD:
            value = PADDING.get(value, value)
        elif kind == _ACT:
            value = ACTIVATIONS.get(value, value)
        elif kind == _BOOL:
            value = bool(value)
        out[name] = value
    return out


# ------------------------------------------------------------------------- the model

def read_model(path: str | os.PathLike | bytes) -> Model:
    """The first subgraph of a .tflite file (a path, or the file's bytes)."""
    raw = bytes(path) if isinstance(path, (bytes, bytearray)) else pathlib.Path(path).read_bytes()
    buf = bytearray(raw)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TFLiteFormatError("not a TensorFlow Lite model (no TFL3 identifier)")
    model = _table(buf, encode.Get(packer.uoffset, buf, 0))
    codes = []
    for code in _tables(model, 1):  # operator_codes
        deprecated = _scalar(code, 0, nt.Int8Flags, 0)
        builtin = max(deprecated, _scalar(code, 3, nt.Int32Flags, 0))
        codes.append((builtin, _string(code, 1)))
    subgraphs = _tables(model, 2)
    if not subgraphs:
        raise TFLiteFormatError("the model has no subgraph")
    buffers = _tables(model, 4)
    graph = subgraphs[0]
    tensors = [_tensor(k, t, buffers, buf) for k, t in enumerate(_tables(graph, 0))]
    operators = [_operator(k, op, codes) for k, op in enumerate(_tables(graph, 3))]
    return Model(tensors, operators, _numbers(graph, 1, nt.Int32Flags).tolist(),
                 _numbers(graph, 2, nt.Int32Flags).tolist(), _string(model, 3))


def _tensor(index: int, tab: Table, buffers: list[Table], buf: bytearray) -> Tensor:
    shape = tuple(int(v) for v in _numbers(tab, 0, nt.Int32Flags))
    type_code = _scalar(tab, 1, nt.Int8Flags, 0)
    name = _string(tab, 3)
    if type_code not in DTYPES:
        raise TFLiteFormatError(f"tensor {name!r}: unsupported type {type_code}")
    dtype = DTYPES[type_code]
    quant = _subtable(tab, 4)
    if quant is not None and len(_numbers(quant, 2, nt.Float32Flags)):
        raise TFLiteFormatError(f"tensor {name!r} is quantized: only float models are read")
    if _slot(tab, 6):
        raise TFLiteFormatError(f"tensor {name!r} is sparse: not supported")
    data = None
    buffer_index = _scalar(tab, 2, nt.Uint32Flags, 0)
    if 0 < buffer_index < len(buffers):
        data = _buffer_bytes(buffers[buffer_index], buf)
        if data is not None:
            count = int(np.prod(shape)) if shape else 1
            values = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
            if values.size != count:
                raise TFLiteFormatError(f"tensor {name!r}: {values.size} values for shape {shape}")
            data = values.reshape(shape).copy()
    return Tensor(index, name, shape, dtype, data)


def _buffer_bytes(tab: Table, buf: bytearray) -> bytes | None:
    o = _slot(tab, 0)
    if o:
        start, n = tab.Vector(o), tab.VectorLen(o)
        return bytes(buf[start:start + n]) if n else None
    offset = _scalar(tab, 1, nt.Uint64Flags, 0)
    size = _scalar(tab, 2, nt.Uint64Flags, 0)
    if offset > 1 and size:  # data stored after the FlatBuffer (models over 2 GB)
        if offset + size > len(buf):
            raise TFLiteFormatError("a buffer points past the end of the file")
        return bytes(buf[offset:offset + size])
    return None


def _operator(index: int, tab: Table, codes: list[tuple[int, str]]) -> Operator:
    code, custom = codes[_scalar(tab, 0, nt.Uint32Flags, 0)]
    inputs = _numbers(tab, 1, nt.Int32Flags).tolist()
    outputs = _numbers(tab, 2, nt.Int32Flags).tolist()
    if code == 32:  # CUSTOM: a custom op's code names it; its options are raw bytes
        o = _slot(tab, 5)
        raw = bytes(tab.Bytes[tab.Vector(o):tab.Vector(o) + tab.VectorLen(o)]) if o else b""
        return Operator(index, custom, inputs, outputs, custom_options=raw, builtin=False)
    name = BUILTIN_NAMES.get(code, f"BUILTIN_{code}")
    fields = OPTION_FIELDS.get(name)
    options = _options(_subtable(tab, 4), fields) if fields else {}
    return Operator(index, name, inputs, outputs, options)
