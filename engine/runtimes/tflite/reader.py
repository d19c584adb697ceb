"""Read a TensorFlow Lite model (.tflite) without TensorFlow or LiteRT: its tensors, constant
weights and operators, as plain Python and numpy.

A .tflite file is a FlatBuffer of TensorFlow Lite's schema.fbs (root table `Model`, file
identifier "TFL3"). The tables are walked with the `flatbuffers` runtime library (Google's, pure
Python, already installed as a dependency of onnxruntime); the few tables a float CNN needs are
described here by their field slots, as schema.fbs numbers them, instead of pulling in the
generated classes of the `tflite` PyPI package for them. Only what the torch rebuilds need is
read: the first subgraph, tensor shapes, types and data (inline or, for files over 2 GB, stored
after the FlatBuffer), quantization parameters (scale, zero point, axis), sparse constants (the
TACO-like format DENSIFY reads, sparse.py turns them dense), operator codes (builtin and custom,
with their versions), inputs, outputs, the options of the operators listed in OPTION_FIELDS and a
custom op's options (a FlexBuffer map, decoded with flatbuffers.flexbuffers).
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field

import numpy as np
from flatbuffers import encode, number_types as nt, packer
from flatbuffers.table import Table

from .sparse import densify

# BuiltinOperator codes of schema.fbs that the CNNs use (and a few near them, for clear errors).
BUILTIN_NAMES = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D",
    18: "MUL", 19: "RELU", 20: "RELU_N1_TO_1", 21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR",
    25: "SOFTMAX", 28: "TANH", 32: "CUSTOM", 34: "PAD", 39: "TRANSPOSE", 40: "MEAN", 41: "SUB",
    42: "DIV", 45: "STRIDED_SLICE", 54: "PRELU", 55: "MAXIMUM", 57: "MINIMUM", 60: "PADV2",
    67: "TRANSPOSE_CONV", 97: "RESIZE_NEAREST_NEIGHBOR", 98: "LEAKY_RELU", 117: "HARD_SWISH",
    124: "DENSIFY",
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
    "FULLY_CONNECTED": [("fused_activation_function", _ACT, 0), ("weights_format", _B, 0),
                        ("keep_num_dims", _BOOL, False)],
    "DEPTH_TO_SPACE": [("block_size", _I, 0)],
    "STRIDED_SLICE": [("begin_mask", _I, 0), ("end_mask", _I, 0), ("ellipsis_mask", _I, 0),
                      ("new_axis_mask", _I, 0), ("shrink_axis_mask", _I, 0), ("offset", _BOOL, False)],
    "LEAKY_RELU": [("alpha", _F, 0.0)],
}
_FLAGS = {_B: nt.Int8Flags, _PAD: nt.Int8Flags, _ACT: nt.Int8Flags, _BOOL: nt.BoolFlags,
          _I: nt.Int32Flags, _F: nt.Float32Flags}


class TFLiteFormatError(ValueError):
    """The file is not a TensorFlow Lite model this reader understands."""


@dataclass
class Quantization:
    """real = scale * (q - zero_point), per slice of `axis` where scale has more than one value."""
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        shape = [1] * q.ndim
        if self.scale.size > 1:
            shape[self.axis] = -1
        scale = self.scale.astype(np.float64).reshape(shape if self.scale.size > 1 else ())
        zero = self.zero_point.astype(np.float64)
        zero = zero.reshape(shape) if zero.size > 1 else (zero.reshape(()) if zero.size else 0.0)
        return ((q.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None  # the constant's values in `shape` (dense), None for activations
    quantization: Quantization | None = None
    sparse: bool = False     # stored sparse in the file; `data` is already densified


@dataclass
class Operator:
    index: int
    name: str               # the builtin's name ("CONV_2D") or a custom op's code
    inputs: list[int]       # tensor indices; -1 for an optional input left out
    outputs: list[int]
    options: dict = field(default_factory=dict)  # parsed builtin options (OPTION_FIELDS)
    custom_options: bytes = b""                  # a custom op's raw options
    builtin: bool = True
    version: int = 1                             # the operator code's version

    def flex_options(self) -> dict:
        """A custom op's options as MediaPipe writes them: a FlexBuffer map."""
        from flatbuffers import flexbuffers

        return flexbuffers.Loads(self.custom_options) if self.custom_options else {}


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
        codes.append((builtin, _string(code, 1), _scalar(code, 2, nt.Int32Flags, 1)))
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
    quant, quantization = _subtable(tab, 4), None
    if quant is not None and len(scale := _numbers(quant, 2, nt.Float32Flags)):
        if _slot(quant, 4) and _scalar(quant, 4, nt.Uint8Flags, 0):
            raise TFLiteFormatError(f"tensor {name!r}: custom quantization")
        quantization = Quantization(scale.copy(), _numbers(quant, 3, nt.Int64Flags).copy(),
                                    _scalar(quant, 6, nt.Int32Flags, 0))
    sparsity = _subtable(tab, 6)
    data = None
    buffer_index = _scalar(tab, 2, nt.Uint32Flags, 0)
    if 0 < buffer_index < len(buffers):
        data = _buffer_bytes(buffers[buffer_index], buf)
        if data is not None:
            count = int(np.prod(shape)) if shape else 1
            values = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
            if sparsity is not None:
                data = densify(values, shape, *_sparsity(sparsity))
            elif values.size != count:
                raise TFLiteFormatError(f"tensor {name!r}: {values.size} values for shape {shape}")
            else:
                data = values.reshape(shape).copy()
    return Tensor(index, name, shape, dtype, data, quantization, sparsity is not None)


def _sparsity(tab: Table):
    """SparsityParameters: traversal order, block map, and per traversed dimension either
    ("dense", size) or ("csr", segments, indices)."""
    dims = []
    for meta in _tables(tab, 2):
        if _scalar(meta, 0, nt.Int8Flags, 0) == 0:
            dims.append(("dense", _scalar(meta, 1, nt.Int32Flags, 0)))
        else:
            dims.append(("csr", _index_vector(meta, 2), _index_vector(meta, 4)))
    return (_numbers(tab, 0, nt.Int32Flags).tolist(), _numbers(tab, 1, nt.Int32Flags).tolist(), dims)


def _index_vector(meta: Table, slot: int) -> np.ndarray:
    """A SparseIndexVector union (slot: its type, slot + 1: the table): Int32, Uint16 or Uint8."""
    kind = _scalar(meta, slot, nt.Uint8Flags, 0)
    flags = {1: nt.Int32Flags, 2: nt.Uint16Flags, 3: nt.Uint8Flags}.get(kind)
    table = _subtable(meta, slot + 1)
    if flags is None or table is None:
        raise TFLiteFormatError(f"sparse index vector of type {kind}")
    return _numbers(table, 0, flags).astype(np.int64)


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


def _operator(index: int, tab: Table, codes: list[tuple[int, str, int]]) -> Operator:
    code, custom, version = codes[_scalar(tab, 0, nt.Uint32Flags, 0)]
    inputs = _numbers(tab, 1, nt.Int32Flags).tolist()
    outputs = _numbers(tab, 2, nt.Int32Flags).tolist()
    if code == 32:  # CUSTOM: a custom op's code names it; its options are raw bytes
        o = _slot(tab, 5)
        raw = bytes(tab.Bytes[tab.Vector(o):tab.Vector(o) + tab.VectorLen(o)]) if o else b""
        return Operator(index, custom, inputs, outputs, custom_options=raw, builtin=False,
                        version=version)
    name = BUILTIN_NAMES.get(code, f"BUILTIN_{code}")
    fields = OPTION_FIELDS.get(name)
    options = _options(_subtable(tab, 4), fields) if fields else {}
    return Operator(index, name, inputs, outputs, options, version=version)
