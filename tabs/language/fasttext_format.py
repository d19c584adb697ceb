"""fastText's binary model format (.bin / .ftz), read into numpy: our own reader, so that no third
runtime (fastText's C++) is needed to run its language identifier in torch.

The layout, as fastText 0.9 writes it (src/fasttext.cc saveModel; all little-endian):
  int32 magic 793712314, int32 version (<= 12)
  args: int32 dim, ws, epoch, minCount, neg, wordNgrams, loss, model, bucket, minn, maxn,
        lrUpdateRate; float64 t
  dictionary: int32 size, nwords, nlabels; int64 ntokens, pruneidx_size; `size` entries of
        (NUL-terminated bytes, int64 count, int8 type: 0 word, 1 label); pruneidx_size pairs of
        int32 (n-gram bucket -> row after the words)
  bool quant_input; the input matrix (dense, or quantized when quant_input)
  bool qout; the output matrix (quantized only when quant_input and qout)
A dense matrix is int64 rows, int64 cols, float32 rows x cols. A quantized one (src/quantmatrix.cc)
is bool qnorm, int64 rows, int64 cols, int32 codesize, uint8 codes (rows x nsubq), a product
quantizer, and with qnorm: uint8 norm codes (rows) and a one-dimensional quantizer for the norms.
A product quantizer (src/productquantizer.cc) is int32 dim, nsubq, dsub, lastdsub and float32
centroids (dim x 256): sub-quantizer m has 256 centroids of dsub values at m * 256 * dsub
(the last one's have lastdsub values).

What is read here is decoded to dense float32 at once: a row is the concatenation of its code's
centroids, times its norm. fastText adds the same products row by row, so the sums agree to float
rounding (see tests/test_language.py for how close).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 793712314
MAX_VERSION = 12  # fastText 0.9's FASTTEXT_VERSION; a newer file may hold what we cannot read
KSUB = 256  # centroids per sub-quantizer (8-bit codes)
LOSSES = {1: "hs", 2: "ns", 3: "softmax", 4: "ova"}
MODELS = {1: "cbow", 2: "sg", 3: "sup"}
ARG_NAMES = ("dim", "ws", "epoch", "minCount", "neg", "wordNgrams", "loss", "model", "bucket",
             "minn", "maxn", "lrUpdateRate")


class NotAFastTextModel(ValueError):
    """The file is not a fastText model this reader can use; the message says why."""


@dataclass
class FastTextModel:
    args: dict            # ARG_NAMES and "t", loss and model as names ("hs", "sup")
    words: list[bytes]    # the vocabulary, words first (nwords), then labels
    counts: np.ndarray    # int64, one per entry of `words`
    nwords: int
    pruneidx: dict[int, int] | None  # n-gram bucket -> row - nwords; None: not pruned
    input: np.ndarray     # float32 (nwords + buckets kept, dim)
    output: np.ndarray    # float32 (labels, dim) for a supervised model
    version: int
    quantized: bool

    @property
    def labels(self) -> list[bytes]:
        return self.words[self.nwords:]


class _Cursor:
    def __init__(self, data: bytes, name: str):
        self.data, self.pos, self.name = data, 0, name

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise NotAFastTextModel(f"{self.name} ends early: it is truncated or not a fastText model")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def array(self, dtype, count: int) -> np.ndarray:
        nbytes = int(count) * np.dtype(dtype).itemsize
        if count < 0 or self.pos + nbytes > len(self.data):
            raise NotAFastTextModel(f"{self.name} ends early: it is truncated or not a fastText model")
        out = np.frombuffer(self.data, dtype=dtype, count=int(count), offset=self.pos)
        self.pos += nbytes
        return out

    def cstring(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise NotAFastTextModel(f"{self.name} ends early: it is truncated or not a fastText model")
        word, self.pos = self.data[self.pos:end], end + 1
        return word


def _dense(cur: _Cursor) -> np.ndarray:
    rows, cols = cur.take("<qq")
    if rows < 0 or cols <= 0:
        raise NotAFastTextModel(f"{cur.name}: a matrix of {rows} x {cols} is not a fastText matrix")
    return cur.array("<f4", rows * cols).reshape(rows, cols).astype(np.float32)


def _quantizer(cur: _Cursor) -> tuple[int, int, int, int, np.ndarray]:
    dim, nsubq, dsub, lastdsub = cur.take("<4i")
    if dim <= 0 or dsub <= 0 or nsubq != -(-dim // dsub) or lastdsub != dim - (nsubq - 1) * dsub:
        raise NotAFastTextModel(f"{cur.name}: inconsistent product quantizer ({dim}, {nsubq}, {dsub}, {lastdsub})")
    return dim, nsubq, dsub, lastdsub, cur.array("<f4", dim * KSUB)


def _decode(codes: np.ndarray, quantizer) -> np.ndarray:
    """Rows of `codes` (rows x nsubq, uint8) as the concatenation of their centroids."""
    dim, nsubq, dsub, lastdsub, centroids = quantizer
    parts = []
    for m in range(nsubq):
        width = lastdsub if m == nsubq - 1 else dsub
        book = centroids[m * KSUB * dsub: m * KSUB * dsub + KSUB * width].reshape(KSUB, width)
        parts.append(book[codes[:, m]])
    return np.concatenate(parts, axis=1)


def _quantized(cur: _Cursor) -> np.ndarray:
    qnorm = cur.take("<?")
    rows, cols, codesize = cur.take("<qqi")
    codes = cur.array(np.uint8, codesize)
    pq = _quantizer(cur)
    if pq[0] != cols or rows < 0 or codesize != rows * pq[1]:
        raise NotAFastTextModel(f"{cur.name}: quantized matrix {rows} x {cols} does not match its codes")
    matrix = _decode(codes.reshape(rows, pq[1]), pq)
    if qnorm:
        norm_codes = cur.array(np.uint8, rows)
        npq = _quantizer(cur)
        if npq[0] != 1:
            raise NotAFastTextModel(f"{cur.name}: the norm quantizer has {npq[0]} dimensions, not 1")
        matrix = matrix * npq[4][norm_codes][:, None]
    return matrix.astype(np.float32)


def read_model(path: str | Path) -> FastTextModel:
    """The fastText model in `path`, matrices decoded to float32. Raises NotAFastTextModel (a
    ValueError) for anything else: another format, a newer fastText version, a truncated file."""
    path = Path(path)
    cur = _Cursor(path.read_bytes(), path.name)
    if len(cur.data) < 8 or cur.take("<i") != MAGIC:
        raise NotAFastTextModel(f"{path.name} is not a fastText model (it does not start with "
                                "fastText's magic number)")
    version = cur.take("<i")
    if not 0 < version <= MAX_VERSION:
        raise NotAFastTextModel(f"{path.name} is fastText format version {version}; this reader "
                                f"knows versions up to {MAX_VERSION}")
    args = dict(zip(ARG_NAMES, cur.take("<12i")))
    args["t"] = cur.take("<d")
    args["loss"] = LOSSES.get(args["loss"], f"unknown ({args['loss']})")
    args["model"] = MODELS.get(args["model"], f"unknown ({args['model']})")
    if version == 11 and args["model"] == "sup":
        args["maxn"] = 0  # as fastText: old supervised models had no character n-grams

    size, nwords, nlabels = cur.take("<3i")
    _ntokens, prune_size = cur.take("<qq")
    if not (0 <= nwords <= size and nwords + nlabels == size):
        raise NotAFastTextModel(f"{path.name}: dictionary of {size} entries, {nwords} words and "
                                f"{nlabels} labels does not add up")
    words, counts = [], np.empty(size, dtype=np.int64)
    for i in range(size):
        words.append(cur.cstring())
        counts[i], _type = cur.take("<qb")
    pruneidx = None
    if prune_size >= 0:
        pairs = cur.array("<i4", 2 * prune_size).reshape(-1, 2)
        pruneidx = dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist()))

    quantized = cur.take("<?")
    matrix_in = _quantized(cur) if quantized else _dense(cur)
    qout = cur.take("<?")
    matrix_out = _quantized(cur) if quantized and qout else _dense(cur)
    if cur.pos != len(cur.data):
        raise NotAFastTextModel(f"{path.name} has {len(cur.data) - cur.pos} bytes after the model")
    if matrix_in.shape[1] != args["dim"] or matrix_out.shape[1] != args["dim"]:
        raise NotAFastTextModel(f"{path.name}: matrices of width {matrix_in.shape[1]} and "
                                f"{matrix_out.shape[1]}, dim {args['dim']}")
    return FastTextModel(args, words, counts, nwords, pruneidx, matrix_in, matrix_out, version, quantized)
