"""The one place that knows what a loadable weights file is: safetensors, checked by its header
bytes; pickle checkpoints (which can run code when loaded) are refused by name and by bytes."""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Callable

from .errors import Refused

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
# Other formats a single-file URL may name: refused before anything is downloaded.
NOT_SAFETENSORS = (".onnx", ".gguf", ".zip", ".gz", ".tar", ".h5", ".msgpack", ".pb", ".tflite")
# A weights file's precision / EMA variant in its name (unet/diffusion_pytorch_model.fp16.safetensors).
FP16_VARIANT = re.compile(r"\.(fp16|bf16|fp32|ema|non_ema)\.", re.I)
MAX_HEADER_BYTES = 100 * 1024**2


def safetensors_header(path: str | os.PathLike) -> dict[str, dict]:
    """Tensor names -> {dtype, shape, data_offsets}, read from the file's JSON header only
    (`__metadata__` left out); Refused when the file is anything else."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8:
            (length,) = struct.unpack("<Q", head)
            if 2 <= length <= MAX_HEADER_BYTES:
                raw = f.read(length)
                if len(raw) == length and raw[:1] == b"{":
                    try:
                        header = json.loads(raw)
                    except ValueError:
                        header = None
                    if isinstance(header, dict):
                        header.pop("__metadata__", None)
                        return header
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise Refused(f"{path.name} is a pickle checkpoint (PyTorch zip/pickle), which can run code when "
                      "loaded: Wimmel reads only .safetensors. Get the model's .safetensors file instead.")
    raise Refused(f"{path.name} is not a safetensors file.")


def check_single_file_name(name: str) -> None:
    """Refuse what a single file's name already tells (a pickle suffix, another format)."""
    suffix = Path(name).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise Refused(f"{Path(name).name} is a pickle checkpoint ({suffix}), which can run code when loaded: "
                      "Wimmel reads only .safetensors. Get the model's .safetensors file instead.")
    if suffix and suffix != ".safetensors":
        raise Refused(f"{Path(name).name}: a single-file model must be a .safetensors checkpoint.")


def check_single_file(path: Path) -> None:
    """A single-file model on disk: a .safetensors name and a safetensors header."""
    if path.suffix.lower() != ".safetensors":
        check_single_file_name(path.name)
        raise Refused(f"{path.name}: a single-file model must be a .safetensors checkpoint.")
    safetensors_header(path)


def sha256_file(path: str | os.PathLike, progress: Callable[[int], None] | None = None,
                chunk: int = 4 * 1024**2) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()
