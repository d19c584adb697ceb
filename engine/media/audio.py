"""Audio in and out: any audio file, or the audio track of any video, through the wheel's ffmpeg.

Decoding always goes through ffmpeg (resampled and mixed down there), so MP3, M4A, OGG, WAV of
any rate and depth, and MP4/MKV/WebM soundtracks all read the same way, as float32 in [-1, 1].
Long inputs stream in chunks from one ffmpeg process (`stream_audio`), so memory stays flat.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np

from ..files import atomic_write
from .ffmpeg import MediaError, Prober, command, header, last_line

NOT_AUDIO = "This file is not audio or video, or its format is not supported."
NO_AUDIO_STREAM = "This file has no audio track."
EMPTY_AUDIO = "The audio could not be read: it is empty, silent for zero seconds, or corrupt."
TOO_LONG = "The audio is too long here: {length}, the limit is {limit}."


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    duration_s: float | None   # None when the container does not say (raw streams)
    sample_rate: int
    channels: int
    codec: str
    has_video: bool


def probe_audio(path) -> AudioInfo:
    """What the first audio track of a file holds; MediaError with a plain message otherwise. A
    file probed before and unchanged since is answered from memory (Prober)."""
    return AUDIO_PROBER.probe(path)


def _probe_audio(path) -> AudioInfo:
    try:
        head = header(path)
    except MediaError as exc:
        if str(exc).startswith("This file is not a video"):
            raise MediaError(NOT_AUDIO, exc.detail) from None
        # "The video file was not found." speaks of a video; here the file may be any media.
        raise MediaError(str(exc).replace("video file", "file").replace("video", "file"), exc.detail) from None
    if head.audio_codec is None:
        raise MediaError(NO_AUDIO_STREAM)
    # The first audio stream's line, as header() read it: "Stream #0:1: Audio: aac, 48000 Hz, stereo, ..."
    layout = head.audio or ""
    rate = re.search(r"(\d+) Hz", layout)
    channels = 1 if "mono" in layout else 2 if "stereo" in layout else 0
    if m := re.search(r"(\d+) channels", layout):
        channels = int(m[1])
    return AudioInfo(head.duration_s, int(rate[1]) if rate else 0, channels or 1,
                     head.audio_codec, head.video is not None)


AUDIO_PROBER = Prober(_probe_audio)   # behind probe_audio(): one per process, see Prober


def _decode_cmd(path, sample_rate: int, mono: bool, start_s: float = 0.0,
                duration_s: float | None = None) -> list[str]:
    seek = ["-ss", f"{start_s:.6f}"] if start_s else []
    limit = ["-t", f"{duration_s:.6f}"] if duration_s is not None else []
    return command(*seek, "-i", os.path.abspath(path), *limit, "-map", "0:a:0", "-vn", "-sn", "-dn",
                *(["-ac", "1"] if mono else []), "-ar", str(sample_rate), "-f", "f32le", "-")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def read_audio(path, sample_rate: int = 16000, mono: bool = True, start_s: float = 0.0,
               duration_s: float | None = None, max_seconds: float | None = None) -> np.ndarray:
    """float32 samples at `sample_rate`: shape (n,) when mono, (n, channels) otherwise.

    `max_seconds` refuses longer inputs before decoding them (interactive endpoints use it; long
    inputs belong on the job queue, which streams them).
    """
    info = probe_audio(path)
    if max_seconds is not None and info.duration_s and info.duration_s - start_s > max_seconds + 0.5:
        raise MediaError(TOO_LONG.format(length=_minutes(info.duration_s - start_s),
                                         limit=_minutes(max_seconds)))
    done = subprocess.run(_decode_cmd(path, sample_rate, mono, start_s, duration_s), capture_output=True)
    if done.returncode != 0 and not done.stdout:
        raise MediaError(EMPTY_AUDIO, last_line(done.stderr))
    samples = np.frombuffer(done.stdout[: len(done.stdout) // 4 * 4], dtype="<f4").astype(np.float32)
    if samples.size == 0:
        raise MediaError(EMPTY_AUDIO, last_line(done.stderr))
    channels = 1 if mono else info.channels
    samples = samples[: samples.size // channels * channels]
    return samples if mono else samples.reshape(-1, channels)


def stream_audio(path, sample_rate: int, chunk_s: float, start_s: float = 0.0
                 ) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (start time in seconds, mono float32 chunk) from `start_s` on; one chunk in memory.

    Chunks start at exact sample offsets (chunk_s * sample_rate samples each), so a job that
    resumes at chunk k with start_s = k * chunk_s gets the same samples as an uninterrupted run.
    """
    probe_audio(path)
    size = int(round(chunk_s * sample_rate))
    if size < 1:
        raise ValueError("chunk_s is shorter than one sample")
    proc = subprocess.Popen(_decode_cmd(path, sample_rate, True, start_s), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        offset = int(round(start_s * sample_rate))
        while True:
            raw = proc.stdout.read(size * 4)
            if not raw:
                break
            chunk = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4").astype(np.float32)
            yield offset / sample_rate, chunk
            offset += chunk.size
    finally:
        proc.kill()
        proc.stdout.close()
        proc.wait()


def write_wav(path, samples: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV, written to a temporary name then renamed: a WAV that exists is complete."""
    import soundfile

    path = Path(path)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        raise MediaError(EMPTY_AUDIO, "nothing to write")
    with atomic_write(path) as tmp:
        soundfile.write(str(tmp), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return path


def replace_audio(video_path, audio_path, out_path) -> Path:
    """The video's picture (stream copy, untouched) with the audio of `audio_path` (AAC)."""
    out_path = Path(out_path)
    with atomic_write(out_path, out_path.suffix) as tmp:  # ffmpeg picks the container by suffix
        done = subprocess.run(command(
            "-y", "-i", os.path.abspath(video_path), "-i", os.path.abspath(audio_path),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "160k",
            # Silence pads a shorter soundtrack so -shortest ends at the picture's last frame.
            "-af", "apad", "-shortest", "-map_metadata", "-1", "-fflags", "+bitexact", str(tmp)),
            capture_output=True)
        if done.returncode != 0:
            raise MediaError("The audio could not be put back into the video.", last_line(done.stderr))
    return out_path
