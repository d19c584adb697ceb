"""Media layer: probe, chunked decode, deterministic segments, concat with audio, errors, memory.

Real ffmpeg (the imageio-ffmpeg binary) on small synthetic videos; no network.
"""
import subprocess
from fractions import Fraction

import numpy as np
import psutil
import pytest

from engine.media import (MediaError, concat_segments, ffmpeg_exe, limit_pixels, probe, read_chunks,
                          restore_size, write_segment)
from video_helpers import make_test_video, moving_gradient

W, H, FRAMES, FPS = 160, 120, 37, 25


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("media") / "in.mp4",
                           frames=FRAMES, width=W, height=H, fps=FPS)


@pytest.fixture(scope="module")
def decoded(video):
    """The whole small video decoded in one chunk: the reference for every other read."""
    (start, frames), = list(read_chunks(video, 1000))
    assert start == 0
    return frames


def decode_all(path):
    return np.concatenate([chunk for _, chunk in read_chunks(path, 1000)])


def pipeline(src, folder, chunk, start_frame=0, stop_after=None):
    """read -> write_segment per chunk, named by first frame; returns the segment paths written."""
    fps = probe(src).fps
    written = []
    for start, frames in read_chunks(src, chunk, start_frame):
        if stop_after is not None and len(written) == stop_after:
            break   # a crash/cancel mid-job
        path = folder / f"seg{start:06d}.mp4"
        write_segment(frames, path, fps)
        written.append(path)
    return written


def ffmpeg_children():
    return [p for p in psutil.Process().children(recursive=True) if "ffmpeg" in p.name()]


# ---------------------------------------------------------------------------------- probe

def test_probe_is_exact(video, tmp_path):
    info = probe(video)
    assert (info.width, info.height, info.frames, info.fps) == (W, H, FRAMES, Fraction(FPS))
    assert info.has_audio and info.audio_codec == "aac"
    assert abs(info.duration_s - FRAMES / FPS) < 1 / FPS

    ntsc = make_test_video(tmp_path / "ntsc.mp4", frames=20, width=64, height=48,
                           fps=Fraction(30000, 1001), audio=False)
    info = probe(ntsc)
    assert (info.frames, info.fps, info.has_audio, info.audio_codec) == \
        (20, Fraction(30000, 1001), False, None)


def test_probe_counts_the_frames_a_trimmed_video_shows(video, tmp_path):
    # Stream copy from 0.5 s: an MP4 edit list hides the frames before it (as phone trims do).
    trimmed = tmp_path / "trimmed.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-ss", "0.5", "-i", str(video), "-c", "copy",
                    str(trimmed)], check=True)
    shown = sum(len(chunk) for _, chunk in read_chunks(trimmed, 10))
    assert shown < FRAMES
    assert probe(trimmed).frames == shown


# ---------------------------------------------------------------------------------- reading

def test_read_chunks_yields_every_frame_once_in_order(video, decoded):
    chunks = list(read_chunks(video, 7))
    assert [start for start, _ in chunks] == list(range(0, FRAMES, 7))
    assert [len(c) for _, c in chunks] == [7] * 5 + [2]
    assert all(c.dtype == np.uint8 and c.shape[1:] == (H, W, 3) for _, c in chunks)
    assert np.array_equal(np.concatenate([c for _, c in chunks]), decoded)
    # In order: each decoded frame is nearest to the frame drawn with its own index.
    draw = moving_gradient(W, H)
    drawn = np.stack([draw(i) for i in range(FRAMES)]).astype(np.int16)
    nearest = [int(np.abs(drawn - frame).mean(axis=(1, 2, 3)).argmin()) for frame in decoded]
    assert nearest == list(range(FRAMES))


@pytest.mark.parametrize("start_frame", [1, 6, 7, 13, FRAMES - 1])
def test_start_frame_is_exact(video, decoded, start_frame):
    chunks = list(read_chunks(video, 5, start_frame))
    assert chunks[0][0] == start_frame
    assert [s for s, _ in chunks] == list(range(start_frame, FRAMES, 5))
    assert np.array_equal(np.concatenate([c for _, c in chunks]), decoded[start_frame:])


def test_start_past_the_end_yields_nothing(video):
    assert list(read_chunks(video, 5, FRAMES)) == []


def test_ffmpeg_is_cleaned_up_when_the_consumer_stops(video):
    chunks = read_chunks(video, 5)
    next(chunks)
    assert ffmpeg_children()
    chunks.close()   # what a `break` out of the for loop does
    assert not ffmpeg_children()

    with pytest.raises(RuntimeError):
        for _ in read_chunks(video, 5):
            raise RuntimeError("model failed")
    assert not ffmpeg_children()


# ---------------------------------------------------------------------------------- writing

def test_round_trip_keeps_frames_fps_duration_and_audio(video, decoded, tmp_path):
    segments = pipeline(video, tmp_path, chunk=10)
    out = tmp_path / "out.mp4"
    concat_segments(segments, out, probe(video).fps, audio_source=video)
    src, info = probe(video), probe(out)
    assert (info.width, info.height, info.frames) == (W, H, FRAMES)
    assert abs(float(info.fps) - float(src.fps)) < 0.01
    assert abs(info.duration_s - src.duration_s) <= 1 / FPS
    assert info.has_audio and info.audio_codec == "aac"
    assert np.abs(decode_all(out).astype(np.int16) - decoded).mean() < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in segments] + ["out.mp4"])   # no temp files left behind


def test_concat_re_encodes_non_aac_audio_and_works_without_audio(video, tmp_path):
    mp3 = tmp_path / "mp3.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), "-c:v", "copy",
                    "-c:a", "libmp3lame", str(mp3)], check=True)
    assert probe(mp3).audio_codec == "mp3"
    segments = pipeline(video, tmp_path, chunk=20)
    concat_segments(segments, tmp_path / "aac.mp4", FPS, audio_source=mp3)
    assert probe(tmp_path / "aac.mp4").audio_codec == "aac"
    concat_segments(segments, tmp_path / "silent.mp4", FPS, audio_source=None)
    silent = probe(tmp_path / "silent.mp4")
    assert not silent.has_audio and silent.frames == FRAMES


def test_write_segment_is_deterministic(decoded, tmp_path):
    write_segment(decoded, tmp_path / "a.mp4", FPS)
    write_segment(decoded.copy(), tmp_path / "b.mp4", FPS)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_resumed_pipeline_matches_a_single_run(video, tmp_path):
    (tmp_path / "once").mkdir()
    (tmp_path / "resumed").mkdir()
    single = pipeline(video, tmp_path / "once", chunk=10)
    first = pipeline(video, tmp_path / "resumed", chunk=10, stop_after=2)
    rest = pipeline(video, tmp_path / "resumed", chunk=10, start_frame=20)
    resumed = first + rest
    assert [p.name for p in resumed] == [p.name for p in single]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(single, resumed))
    concat_segments(single, tmp_path / "once.mp4", FPS, video)
    concat_segments(resumed, tmp_path / "resumed.mp4", FPS, video)
    assert np.array_equal(decode_all(tmp_path / "once.mp4"), decode_all(tmp_path / "resumed.mp4"))


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = np.full((3, 25, 33, 3), 128, np.uint8)
    write_segment(frames, tmp_path / "odd.mp4", 10)
    info = probe(tmp_path / "odd.mp4")
    assert (info.width, info.height, info.frames) == (34, 26, 3)


def test_write_segment_rejects_bad_frames_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_segment(np.zeros((2, 8, 8), np.uint8), tmp_path / "x.mp4", 25)
    with pytest.raises(ValueError):
        write_segment(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "x.mp4", 25)
    with pytest.raises(MediaError):
        write_segment(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "missing" / "x.mp4", 25)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- errors

def _empty(tmp_path, video):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    return path


def _text(tmp_path, video):
    path = tmp_path / "notes.mp4"
    path.write_text("These are my holiday notes, not a video.\n" * 20)
    return path


def _truncated(tmp_path, video):
    data = video.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


def _audio_only(tmp_path, video):
    path = tmp_path / "tone.m4a"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=duration=1",
                    "-c:a", "aac", str(path)], check=True)
    return path


@pytest.mark.parametrize("make, words", [
    (_empty, "empty or corrupt"),
    (_text, "not a video"),
    (_truncated, "truncated or corrupt"),
    (_audio_only, "no video stream"),
])
def test_bad_files_raise_a_clear_media_error(video, tmp_path, make, words):
    path = make(tmp_path, video)
    for attempt in (lambda: probe(path), lambda: next(read_chunks(path, 5))):
        with pytest.raises(MediaError) as caught:
            attempt()
        message = str(caught.value)
        assert words in message
        assert "ffmpeg" not in message and "\n" not in message and len(message) < 80
    assert isinstance(caught.value, ValueError)
    assert not ffmpeg_children()


def test_missing_ffmpeg_is_a_media_error(monkeypatch, video):
    import imageio_ffmpeg

    def no_binary():
        raise RuntimeError("No ffmpeg exe could be found.")
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_binary)
    ffmpeg_exe.cache_clear()
    try:
        with pytest.raises(MediaError, match="ffmpeg was not found"):
            probe(video)
    finally:
        monkeypatch.undo()
        ffmpeg_exe.cache_clear()


def test_an_unchanged_file_is_probed_once_and_a_rewritten_one_again(monkeypatch, tmp_path):
    from engine.media import video as video_module

    counted = []
    count_packets = video_module._count_packets
    monkeypatch.setattr(video_module, "_count_packets", lambda path: counted.append(path) or count_packets(path))
    path = make_test_video(tmp_path / "v.mp4", frames=10, width=64, height=48, audio=False)
    first = probe(path)
    assert probe(str(path)) == first and len(counted) == 1   # the tab, submit and the job ask again
    make_test_video(path, frames=20, width=64, height=48, audio=False)   # written anew in place
    assert probe(path).frames == 20 and len(counted) == 2


def test_a_prober_remembers_only_its_latest_files(monkeypatch, tmp_path):
    from engine.media import Prober
    from engine.media import video as video_module

    counted = []
    count_packets = video_module._count_packets
    monkeypatch.setattr(video_module, "_count_packets", lambda path: counted.append(path) or count_packets(path))
    first, second = (make_test_video(tmp_path / f"{n}.mp4", frames=n, width=64, height=48, audio=False)
                     for n in (5, 6))
    prober = Prober(video_module._probe, keep=1)
    assert prober.probe(first).frames == 5 and prober.probe(first).frames == 5 and len(counted) == 1
    assert prober.probe(second).frames == 6 and len(counted) == 2
    assert prober.probe(first).frames == 5 and len(counted) == 3   # forgotten for the newer file
    assert Prober(video_module._probe).probe(second).frames == 6 and len(counted) == 4   # another prober knows nothing


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        probe(tmp_path / "nope.mp4")


# ---------------------------------------------------------------------------------- frames

def test_limit_pixels_and_restore_size():
    frame = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    small, scale = limit_pixels(frame, 640 * 360)
    assert small.shape == (360, 640, 3) and small.dtype == np.uint8 and small.flags.writeable
    assert scale == pytest.approx(0.5)
    odd, scale = limit_pixels(frame, 100_000)
    assert odd.shape[0] * odd.shape[1] <= 100_000
    assert odd.shape[1] / odd.shape[0] == pytest.approx(1280 / 720, rel=0.01)
    assert scale == pytest.approx(odd.shape[1] / 1280)

    same, scale = limit_pixels(frame, 1280 * 720)
    assert same is frame and scale == 1.0

    assert restore_size(small, (720, 1280)).shape == (720, 1280, 3)
    assert restore_size(frame, (720, 1280)) is frame
    mask = np.zeros((90, 160), np.uint8)
    assert restore_size(mask, (720, 1280)).shape == (720, 1280)


# ---------------------------------------------------------------------------------- memory

def test_reading_a_long_video_keeps_memory_bounded(tmp_path):
    src = make_test_video(tmp_path / "hd.mp4", frames=300, width=1280, height=720, fps=30,
                          audio=False)
    chunk_bytes = 30 * 1280 * 720 * 3   # 79 MiB
    process = psutil.Process()
    base = peak = process.memory_info().rss
    seen = 0
    for start, chunk in read_chunks(src, 30):
        assert start == seen
        seen += len(chunk)
        peak = max(peak, process.memory_info().rss)
    assert seen == 300
    # The whole clip decoded is 10 chunks (790 MiB); streaming holds about one or two.
    assert peak - base < 5 * chunk_bytes, f"RSS grew {(peak - base) / 2**20:.0f} MiB"
