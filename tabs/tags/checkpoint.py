"""A TensorFlow 1 checkpoint read without TensorFlow: the `.index` tensor bundle and its `.data` shard.

The `.index` is a LevelDB-format table (TF's `core/lib/io/table`): data blocks of prefix-compressed
keys with a restart array, an index block pointing at them, and a 48-byte footer ending in the
table magic. Its key "" holds the BundleHeaderProto; every other key is a tensor name whose value
is a BundleEntryProto (dtype, shape, shard_id, offset, size, crc32c): the tensor's raw
little-endian bytes sit at [offset, offset + size) of `.data-<shard>-of-<n>`. TF writes these
tables uncompressed; a compressed block is refused rather than misread.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes) after every block
# tensorflow/core/framework/types.proto: the numeric dtypes a checkpoint of these models holds.
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
          9: np.int64, 10: np.bool_, 19: np.float16}


class CheckpointError(ValueError):
    """The files are not a tensor bundle this reader understands."""


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None  # masked, as TF stores it


# ---------------------------------------------------------------------------------- wire format

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("a varint longer than 64 bits")


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; bytes fields as bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise CheckpointError(f"protobuf wire type {wire} is not expected in a bundle entry")
        yield number, wire, value


def _shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated dim (2) {size (1)}."""
    dims = []
    for number, _, value in _fields(buf):
        if number == 2:
            dims.append(next((v for n, _, v in _fields(value) if n == 1), 0))
        elif number == 3 and value:
            raise CheckpointError("a tensor of unknown rank")
    return tuple(dims)


def _entry(name: str, buf: bytes) -> Entry:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7."""
    got = {number: value for number, _, value in _fields(buf)}
    if 7 in got:
        raise CheckpointError(f"{name}: a partitioned (sliced) variable")
    dtype = got.get(1, 0)
    if dtype not in DTYPES:
        raise CheckpointError(f"{name}: TensorFlow dtype {dtype} is not supported")
    return Entry(name, np.dtype(DTYPES[dtype]).newbyteorder("<"), _shape(got.get(2, b"")),
                 got.get(3, 0), got.get(4, 0), got.get(5, 0), got.get(6))


# ---------------------------------------------------------------------------------- table

def _block(data: bytes, offset: int, size: int) -> bytes:
    if offset + size + BLOCK_TRAILER > len(data):
        raise CheckpointError("a block handle points past the end of the index")
    if data[offset + size] != 0:
        raise CheckpointError("a compressed index block (only uncompressed tables are read)")
    return data[offset:offset + size]


def _block_items(block: bytes):
    """(key, value) of one block: each entry shares a prefix with the previous key."""
    if len(block) < 4:
        raise CheckpointError("a truncated block")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + length]
        pos += length


def read_index(index_path) -> dict[str, Entry]:
    """Every tensor of a bundle's `.index`, by name, in the table's (sorted) order."""
    data = Path(index_path).read_bytes()
    if len(data) < FOOTER_BYTES or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise CheckpointError(f"{Path(index_path).name} is not a TensorFlow checkpoint index (no table magic)")
    footer = data[len(data) - FOOTER_BYTES:]
    _, pos = _varint(footer, 0)  # the metaindex block handle: empty in a bundle
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    entries: dict[str, Entry] = {}
    for _, handle in _block_items(_block(data, index_offset, index_size)):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        for key, value in _block_items(_block(data, offset, size)):
            if key:  # "" is the BundleHeaderProto (shard count, endianness, version)
                name = key.decode()
                entries[name] = _entry(name, value)
            else:
                header = {number: v for number, _, v in _fields(value)}
                if header.get(2, 0) != 0:  # endianness: 0 little, 1 big
                    raise CheckpointError("a big-endian checkpoint")
    return entries


# ---------------------------------------------------------------------------------- crc32c

def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE: list[int] = []


def masked_crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) masked as TF and LevelDB store it. Pure Python, ~1 s per 5 MB: for
    checking a checkpoint in tests, not on every load."""
    if not _CRC_TABLE:
        _CRC_TABLE.extend(_crc_table())
    table, crc = _CRC_TABLE, 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------- tensors

def shard_path(prefix, shard: int, shards: int = 1) -> Path:
    """The data file of `shard`: '<prefix>.data-00000-of-00001' (musicnn's prefix is its folder + '/')."""
    return Path(f"{prefix}.data-{shard:05d}-of-{shards:05d}")


def read_checkpoint(prefix, names=None, verify: bool = False) -> dict[str, np.ndarray]:
    """Tensors of the checkpoint at `prefix` (the path before '.index'), all or those in `names`.
    verify: check each tensor's bytes against the crc32c the index stores."""
    entries = read_index(f"{prefix}.index")
    wanted = list(entries) if names is None else list(names)
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise CheckpointError(f"not in the checkpoint: {', '.join(missing[:5])}")
    shards = max((e.shard for e in entries.values()), default=0) + 1
    tensors: dict[str, np.ndarray] = {}
    files: dict[int, bytes] = {}
    for name in wanted:
        entry = entries[name]
        if entry.shard not in files:
            files[entry.shard] = shard_path(prefix, entry.shard, shards).read_bytes()
        raw = files[entry.shard][entry.offset:entry.offset + entry.size]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if len(raw) != entry.size or entry.size != count * entry.dtype.itemsize:
            raise CheckpointError(f"{name}: {entry.size} bytes do not hold {entry.shape} of {entry.dtype}")
        if verify and entry.crc32c is not None and masked_crc32c(raw) != entry.crc32c:
            raise CheckpointError(f"{name}: its bytes do not match the checksum in the index")
        tensors[name] = np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape).astype(entry.dtype.newbyteorder("="))
    return tensors
