"""Audio in and out through ffmpeg: any file or a video's soundtrack, resampled, streamed, muxed back."""
import numpy as np
import pytest

from engine.media.audio import (MediaError, probe_audio, read_audio, replace_audio, stream_audio,
                                write_wav)
from engine.media.video import probe
from video_helpers import make_test_video


def tone(seconds, rate, hz=220.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_read_resamples_and_keeps_the_signal(tmp_path):
    write_wav(tmp_path / "a.wav", tone(3, 22050), 22050)
    info = probe_audio(tmp_path / "a.wav")
    assert (info.sample_rate, info.channels, info.has_video) == (22050, 1, False)
    samples = read_audio(tmp_path / "a.wav", 16000)
    assert samples.shape == (48000,) and samples.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * 16000 / samples.size == pytest.approx(220, abs=1)


def test_stream_chunks_are_exact_and_resume_at_the_same_samples(tmp_path):
    write_wav(tmp_path / "a.wav", tone(3, 16000), 16000)
    chunks = list(stream_audio(tmp_path / "a.wav", 16000, 1.0))
    assert [start for start, _ in chunks] == [0.0, 1.0, 2.0]
    whole = np.concatenate([c for _, c in chunks])
    np.testing.assert_array_equal(whole, read_audio(tmp_path / "a.wav", 16000))
    (start, last), = stream_audio(tmp_path / "a.wav", 16000, 1.0, start_s=2.0)
    np.testing.assert_array_equal(last, chunks[2][1])


def test_video_soundtrack_is_read_and_replaced_without_touching_the_picture(tmp_path):
    make_test_video(tmp_path / "v.mp4", frames=50, width=64, height=48, fps=25)
    assert probe_audio(tmp_path / "v.mp4").has_video
    write_wav(tmp_path / "t.wav", tone(2, 22050, hz=440), 22050)
    replace_audio(tmp_path / "v.mp4", tmp_path / "t.wav", tmp_path / "o.mp4")
    assert probe(tmp_path / "o.mp4").frames == 50
    samples = read_audio(tmp_path / "o.mp4", 16000)
    assert np.argmax(np.abs(np.fft.rfft(samples))) * 16000 / samples.size == pytest.approx(440, abs=2)


def test_bad_files_get_plain_messages(tmp_path):
    make_test_video(tmp_path / "silent.mp4", frames=10, width=64, height=48, audio=False)
    (tmp_path / "x.wav").write_text("not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    write_wav(tmp_path / "long.wav", tone(3, 8000), 8000)
    with pytest.raises(MediaError, match="no audio track"):
        read_audio(tmp_path / "silent.mp4")
    with pytest.raises(MediaError, match="not audio or video"):
        read_audio(tmp_path / "x.wav")
    with pytest.raises(MediaError, match="empty"):
        read_audio(tmp_path / "empty.wav")
    with pytest.raises(MediaError, match="too long here: 3.0 s, the limit is 1.0 s"):
        read_audio(tmp_path / "long.wav", max_seconds=1)
