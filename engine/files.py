"""Files that appear whole or not at all. A job may be killed at any moment and resumed, and a
result may be served while another request writes: so every file is written under a hidden,
unique staging name in its own folder and renamed into place in one step (os.replace). A file
that exists under its final name is complete."""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np


def staging_path(path: Path) -> Path:
    """Hidden and unique in `path`'s folder, so that os.replace onto `path` is atomic."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")


@contextlib.contextmanager
def atomic_write(path, suffix: str = "") -> Iterator[Path]:
    """A staging path to write; it becomes `path` when the block ends, and is removed if the
    block fails. `suffix` ends the staging name for writers that insist on one (np.savez adds
    .npz otherwise; ffmpeg and PIL pick their format by it)."""
    path = Path(path)
    tmp = staging_path(path)
    if suffix:
        tmp = tmp.with_name(tmp.name + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, data, **dump_options) -> Path:
    return write_text(path, json.dumps(data, **dump_options))


def save_arrays(path, *arrays: np.ndarray, **named: np.ndarray) -> Path:
    """np.savez, atomically: positional arrays load back as arr_0, arr_1, ..."""
    with atomic_write(path, ".npz") as tmp:
        np.savez(tmp, *arrays, **named)
    return Path(path)


def save_array(path, array: np.ndarray) -> Path:
    """np.save, atomically."""
    with atomic_write(path, ".npy") as tmp:
        np.save(tmp, array)
    return Path(path)
