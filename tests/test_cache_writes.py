"""Gradio's cache writers, made atomic by ui.gradio_patches: a file handed to one user is never
truncated by another request that returns the same content."""
import os
import threading
from pathlib import Path

import gradio
import numpy as np
import pytest
from gradio import processing_utils as pu
from PIL import Image

from ui import gradio_patches


@pytest.fixture()
def atomic(monkeypatch):
    for name in ("save_pil_to_cache", "save_bytes_to_cache", "save_audio_to_cache"):
        monkeypatch.setattr(pu, name, getattr(pu, name))  # restored after the test
    gradio_patches.make_cache_writes_atomic()


def shortest_read_while_rewriting(save, expected: int, writers: int = 3, rounds: int = 25) -> int:
    """Writers save the same content again and again while a reader reads the cached file whole
    each time; the smallest size the reader ever saw."""
    path = save()
    sizes, done = [], threading.Event()

    def rewrite():
        for _ in range(rounds):
            assert save() == path

    def read():
        while not done.is_set():
            sizes.append(len(Path(path).read_bytes()))

    threads = [threading.Thread(target=rewrite) for _ in range(writers)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert sizes and os.path.getsize(path) == expected
    return min(sizes)


def test_the_same_bytes_returned_by_concurrent_requests_never_reach_a_reader_cut_short(tmp_path, atomic):
    data = os.urandom(8 * 1024 * 1024)
    smallest = shortest_read_while_rewriting(lambda: pu.save_bytes_to_cache(data, "out.bin", str(tmp_path)), len(data))
    assert smallest == len(data)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["out.bin"]   # no staging files left


def test_gradio_unpatched_does_cut_files_short(tmp_path):
    # The failure the module exists for, shown on Gradio's own writer (why the test above means
    # something). The original, as an app built earlier in this process has replaced pu's.
    gradio_writer = gradio_patches.GRADIO_WRITERS["save_bytes_to_cache"]
    data = os.urandom(8 * 1024 * 1024)
    smallest = shortest_read_while_rewriting(lambda: gradio_writer(data, "out.bin", str(tmp_path)), len(data))
    assert smallest < len(data)


def test_pictures_and_sounds_are_written_to_the_same_places_as_gradio_would(tmp_path, atomic):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8))
    sound = (np.sin(np.arange(16000) / 10) * 12000).astype(np.int16)
    ours_image = pu.save_pil_to_cache(image, str(tmp_path), name="result", format="png")
    ours_sound = pu.save_audio_to_cache(sound, 16000, "wav", str(tmp_path))
    inode = os.stat(ours_image).st_ino
    assert pu.save_pil_to_cache(image, str(tmp_path), name="result", format="png") == ours_image
    assert os.stat(ours_image).st_ino != inode   # replaced, not rewritten in place
    assert (np.asarray(Image.open(ours_image)) == np.asarray(image)).all()
    import soundfile

    back, rate = soundfile.read(ours_sound, dtype="int16")
    assert rate == 16000 and (back == sound).all()
    # The names Gradio itself gives (content hash folder, then the name), so its cache routes serve them.
    original = tmp_path / "gradio"
    assert Path(ours_image).relative_to(tmp_path).parts[1] == "result.png"
    assert Path(ours_sound).relative_to(tmp_path).parts[1] == "audio.wav"
    assert gradio_patches.GRADIO_WRITERS["save_audio_to_cache"](sound, 16000, "wav", str(original)).replace(str(original.resolve()), "") \
        == ours_sound.replace(str(tmp_path.resolve()), "")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_the_patches_were_checked_against_the_installed_gradio():
    # On a Gradio upgrade, read the functions ui/gradio_patches.py replaces again, then update it.
    assert gradio.__version__ == gradio_patches.GRADIO_CHECKED
