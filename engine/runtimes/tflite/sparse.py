"""Sparse TensorFlow Lite constants made dense, as the DENSIFY operator does.

MediaPipe's sparse models (face_detection_full_range_sparse, pose_detection) store their 1x1
convolution weights in TFLite's sparse format (schema.fbs `SparsityParameters`, a variant of
TACO): the dimensions are traversed in `traversal_order`, each either dense (its size) or
compressed (CSR: `segments` per element of the previous level, `indices` of the stored ones),
optionally with dense blocks whose dimensions `block_map` maps back onto the original ones. This
is tensorflow/lite/kernels/internal/utils/sparsity_format_converter.cc's `Populate` (the depth
first walk that writes one stored value per complete coordinate), done level by level with numpy.
"""
from __future__ import annotations

import numpy as np


def densify(values: np.ndarray, shape: tuple[int, ...], traversal_order: list[int],
            block_map: list[int], dims: list[tuple]) -> np.ndarray:
    """The dense tensor of `shape` whose stored (non-zero) values are `values`.

    dims[level] is ("dense", size) or ("csr", segments, indices), in traversal order."""
    rank = len(shape)
    if len(dims) != len(traversal_order) or len(traversal_order) != rank + len(block_map):
        raise ValueError("sparse tensor: traversal order, block map and metadata disagree")
    block_size = [dims[traversal_order[rank + k]][1] for k in range(len(block_map))]
    prev = np.zeros(1, dtype=np.int64)       # per path so far: its position in the level
    coords: list[np.ndarray] = []            # per level so far: each path's index there
    for meta in dims:
        if meta[0] == "dense":
            size = int(meta[1])
            here = np.tile(np.arange(size, dtype=np.int64), prev.size)
            coords = [np.repeat(c, size) for c in coords]
            prev = (np.repeat(prev, size) * size) + here
        else:
            segments, indices = meta[1], meta[2]
            valid = prev + 1 < segments.size
            starts = np.where(valid, segments[np.minimum(prev, segments.size - 1)], 0)
            ends = np.where(valid, segments[np.minimum(prev + 1, segments.size - 1)], 0)
            counts = np.maximum(ends - starts, 0)
            # The stored positions of each path's children, in order: starts[p] .. ends[p] - 1.
            offsets = np.repeat(starts - np.cumsum(counts) + counts, counts)
            position = np.arange(int(counts.sum()), dtype=np.int64) + offsets
            coords = [np.repeat(c, counts) for c in coords]
            here, prev = indices[position], position
        coords.append(here)
    index = [np.zeros(prev.size, dtype=np.int64) for _ in range(rank)]
    for level, c in enumerate(coords):
        dim = traversal_order[level]
        if level < rank:
            index[dim] = c
        else:  # a block dimension: refines the original one it maps to
            block = dim - rank
            index[block_map[block]] = index[block_map[block]] * block_size[block] + c
    if values.size < prev.size:
        raise ValueError(f"sparse tensor: {values.size} values for {prev.size} positions")
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(index)] = values[:prev.size]
    return dense
