"""Job folders over the network: the head's data dir is not assumed to be shared, so a job's
files travel as {relative path: bytes}: its inputs and earlier checkpoints' files to the worker
when the job is assigned, the files each checkpoint wrote back to the head."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def _safe(relative: str) -> PurePosixPath:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"a job file must stay inside the job's folder, not {relative!r}")
    return path


def stamp(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of every file under folder."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            info = path.stat()
            found[path.relative_to(folder).as_posix()] = (info.st_size, info.st_mtime_ns)
    return found


def pack(folder: Path, only: list[str] | None = None) -> dict[str, bytes]:
    """The files under folder (or just `only`), by relative path."""
    names = sorted(stamp(folder)) if only is None else only
    return {name: (folder / _safe(name)).read_bytes() for name in names}


def unpack(folder: Path, files: dict[str, bytes]) -> None:
    """Write files under folder, each whole or not at all (a crash leaves no half file that a
    checkpoint could name)."""
    for name, data in files.items():
        path = folder / _safe(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)


class Changes:
    """What a job wrote in its folder since the last call: the files a checkpoint carries."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._seen = stamp(folder)

    def take(self) -> dict[str, bytes]:
        now = stamp(self.folder)
        changed = [name for name, mark in now.items() if self._seen.get(name) != mark]
        self._seen = now
        return pack(self.folder, changed)
