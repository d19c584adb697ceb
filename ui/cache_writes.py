"""Gradio names the cache file of a returned picture, sound or byte string by a hash of its
content and writes it in place (gradio 6.31 processing_utils: save_pil_to_cache,
save_bytes_to_cache, save_audio_to_cache). Two requests that return the same content write the
same path: the second truncates the file while the first user's browser is still downloading it,
which arrives cut short ("Too little data for declared Content-Length", seen under `bench load`
with two identical OCR results). Here those writers stage the file under a private name and
rename it into place, as Gradio's own save_file_to_cache already does: a reader keeps the whole
old file, a writer that fails leaves nothing behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gradio import processing_utils as pu

from engine.files import atomic_write


def _publish(final: Path, write) -> str:
    """Call write(staging_path), then move the staged file to `final` in one step."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(final, final.suffix) as staging:
        write(staging)
    return str(final.resolve())


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    data = pu.encode_pil_to_bytes(img, format)
    return _publish(Path(cache_dir) / pu.hash_bytes(data) / f"{name}.{format}", lambda p: Path(p).write_bytes(data))


def save_bytes_to_cache(data: bytes, file_name: str, cache_dir: str) -> str:
    if not Path(file_name).suffix:
        file_name += pu.detect_audio_format(data)
    return _publish(Path(cache_dir) / pu.hash_bytes(data) / Path(file_name).name,
                    lambda p: Path(p).write_bytes(data))


# Gradio's own writers, kept before make_cache_writes_atomic replaces them (save_audio_to_cache
# below calls its original; tests show the race on the originals).
GRADIO_WRITERS = {name: getattr(pu, name) for name in ("save_pil_to_cache", "save_bytes_to_cache",
                                                       "save_audio_to_cache")}


def save_audio_to_cache(data, sample_rate: int, format: str, cache_dir: str) -> str:
    # Gradio's own function picks the hashed path and encodes; it is pointed at a private
    # folder and its file then moved to where Gradio would have put it.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".audio-") as private:
        written = Path(GRADIO_WRITERS["save_audio_to_cache"](data, sample_rate, format, private))
        final = Path(cache_dir) / written.relative_to(Path(private).resolve())
        return _publish(final, lambda p: os.replace(written, p))


def make_cache_writes_atomic() -> None:
    """Replace Gradio's in-place cache writers with the staged ones above. Idempotent; every
    caller in Gradio reaches them through the module (processing_utils.save_...)."""
    pu.save_pil_to_cache = save_pil_to_cache
    pu.save_bytes_to_cache = save_bytes_to_cache
    pu.save_audio_to_cache = save_audio_to_cache
