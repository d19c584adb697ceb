"""Files handed back by tabs live in their own folders, and old ones are swept away."""
import os
import time

from ui import outputs


def test_new_folders_are_separate_and_old_ones_are_swept(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "ROOT", tmp_path)
    first, second = outputs.new_output_dir("tts"), outputs.new_output_dir("tts")
    assert first != second and first.parent == tmp_path / "tts"
    (first / "speech.wav").write_bytes(b"RIFF")
    old = time.time() - outputs.KEEP_S - 60
    os.utime(first, (old, old))
    third = outputs.new_output_dir("stt")
    assert not first.exists() and second.exists() and third.exists()
