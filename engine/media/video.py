"""Video in and out through the static ffmpeg of the imageio-ffmpeg wheel (no system ffmpeg).

A long video is never held whole in memory: read_chunks streams decoded RGB frames from one
ffmpeg process through a pipe, each processed chunk becomes its own H.264 segment on disk
(write_segment), and concat_segments joins the segments by stream copy and muxes the source's
audio back. Finished files appear only by atomic rename, so a segment that exists is complete
and a job can resume after its last one.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import math
import os
import re
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from .ffmpeg import (EMPTY_OR_CORRUPT, NO_FFMPEG, NO_VIDEO_STREAM, NOT_A_VIDEO, TO_YUV, TRUNCATED,  # noqa: F401
                     X264, MediaError, Prober, command, ffmpeg_exe, header, last_line)
from ..files import atomic_write, staging_path

log = logging.getLogger(__name__)

# What a user sees. ffmpeg's own words stay in MediaError.detail, for logs.
STILL_IMAGE = "This file is a still image, not a video."
ENCODE_FAILED = "The video could not be encoded."
DISK_FULL = "The disk is full: there was no room to write the video. Free some space, then retry the job."



@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    frames: int
    duration_s: float
    has_audio: bool
    audio_codec: str | None


def frame_rate(fps) -> Fraction:
    """fps as an exact fraction; a float such as 29.97002997 becomes 30000/1001."""
    if isinstance(fps, float):
        return Fraction(fps).limit_denominator(1001)
    return Fraction(fps)


def _write_failed(stderr: str | bytes) -> MediaError:
    """ffmpeg failed while writing: a full disk deserves its own words (ffmpeg's are buried)."""
    detail = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    if "No space left on device" in detail:
        return MediaError(DISK_FULL, last_line(detail))
    return MediaError(ENCODE_FAILED, last_line(detail))


# ---------------------------------------------------------------------------------- probing

def _snap_fps(shown: float) -> Fraction:
    """ffmpeg prints fps with 2 decimals: 29.97 means 30000/1001."""
    if abs(shown - round(shown)) < 0.005:
        return Fraction(round(shown))
    ntsc = shown * 1.001
    if abs(ntsc - round(ntsc)) < 0.01:
        return Fraction(round(ntsc) * 1000, 1001)
    return Fraction(str(shown))


_DISCARD = 0x4   # AV_PKT_FLAG_DISCARD


def _count_packets(path) -> tuple[int, Fraction | None]:
    """Frames as the container indexes them (stream copy, no decoding), and the frame rate
    that the commonest packet duration gives (exact in a fine time base, as MP4's).

    Packets flagged "discard" (before the start of an MP4 edit list, as in a trimmed phone
    video) are decoded only as references and never shown, so they are not counted.
    """
    cmd = command("-v", "error", "-i", os.path.abspath(path), "-map", "0:V:0",
               "-c", "copy", "-f", "framecrc", "pipe:1")
    count, tb, durations = 0, None, collections.Counter()
    with tempfile.TemporaryFile() as err:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
            for line in proc.stdout:   # one line per packet: stream, dts, pts, duration, size, crc
                if line.startswith("#tb 0:"):
                    tb = Fraction(line.split(":", 1)[1].strip())
                elif line[:1].isdigit():
                    fields = line.split(",")
                    durations[int(fields[3])] += 1
                    flags = fields[6].strip() if len(fields) > 6 else ""   # absent: keyframe
                    if not (flags.startswith("F=") and int(flags[2:], 16) & _DISCARD):
                        count += 1
        err.seek(0)
        errors = err.read().decode("utf-8", "replace")
    # A file cut after its index still opens; the demuxer then reports "partial file".
    if proc.returncode != 0 or "partial file" in errors:
        raise MediaError(TRUNCATED, last_line(errors))
    step = durations.most_common(1)[0][0] if durations else 0
    return count, (1 / (tb * step) if tb and step > 0 else None)


def probe(path) -> VideoInfo:
    """Size (as decoded, i.e. after rotation), exact fps, exact frame count, audio of a video
    file; a file probed before and unchanged since is answered from memory (Prober)."""
    return PROBER.probe(path)


def _probe(path) -> VideoInfo:
    head = header(path)
    if head.format.endswith("_pipe") or head.format == "image2":
        raise MediaError(STILL_IMAGE, head.format)   # ffmpeg reads a PNG as a 1-frame video
    if head.video is None:
        raise MediaError(NO_VIDEO_STREAM)
    size = re.search(r", (\d+)x(\d+)[ ,\n]", head.video)
    if not size:
        raise MediaError(EMPTY_OR_CORRUPT, head.video.splitlines()[0])
    width, height = int(size[1]), int(size[2])
    # ffmpeg rotates frames upright while decoding; a quarter turn swaps the sides.
    if (rot := re.search(r"rotation of (-?[\d.]+) degrees", head.video)) and \
            round(float(rot[1])) % 180 == 90:
        width, height = height, width

    frames, exact = _count_packets(path)
    if frames == 0:
        raise MediaError(EMPTY_OR_CORRUPT, "no video frames")
    # The printed rates (average "fps", base "tbr") have 2 decimals only. The packets' rate is
    # exact in a fine time base (MP4: 1/12800, 1/30000); in a coarse one (Matroska's 1 ms)
    # it disagrees with the printed rates, which then win.
    shown = [float(m[1]) for m in re.finditer(r"([\d.]+) (?:fps|tbr)\b", head.video)]
    fps = None
    if exact and (not shown or any(abs(exact - rate) <= 0.002 * rate for rate in shown)):
        fps = exact
    if fps is None:
        if not shown or not shown[0]:
            raise MediaError(EMPTY_OR_CORRUPT, "no frame rate")
        fps = _snap_fps(shown[0])
    duration = head.duration_s if head.duration_s else float(frames / fps)
    return VideoInfo(width, height, fps, frames, duration, head.audio_codec is not None,
                     head.audio_codec)


PROBER = Prober(_probe)   # behind probe(): one per process, see Prober


# ---------------------------------------------------------------------------------- reading


def _fill(stream, buf: memoryview) -> int:
    """Read into buf until it is full or the stream ends; return the bytes read."""
    got = 0
    while got < len(buf):
        n = stream.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def read_chunks(path, chunk_frames: int, start_frame: int = 0
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index of first frame, uint8 [n, H, W, 3] RGB) from start_frame on, chunk by chunk.

    One ffmpeg process decodes into a pipe; only one chunk is held here at a time. Frames
    before start_frame are dropped inside ffmpeg by frame number (select filter), so a resume
    starts at exactly that frame. The process is killed if the consumer stops early.
    """
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be at least 1")
    if start_frame < 0:
        raise ValueError("start_frame must be >= 0")
    info = probe(path)
    if start_frame >= info.frames:
        return
    frame_bytes = info.width * info.height * 3
    args = ["-v", "error", "-i", os.path.abspath(path), "-map", "0:V:0", "-an", "-sn", "-dn"]
    if start_frame:
        args += ["-vf", f"select=gte(n\\,{start_frame})"]
    # passthrough: never duplicate or drop frames to fit a frame rate.
    args += ["-fps_mode", "passthrough", "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]
    with tempfile.TemporaryFile() as err:   # a file, not a pipe: a chatty stderr cannot block ffmpeg
        proc = subprocess.Popen(command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, bufsize=0)
        try:
            index = start_frame
            while True:
                # Expect what the container says is left; read on one frame at a time past it.
                n = min(chunk_frames, max(1, info.frames - index))
                chunk = np.empty((n, info.height, info.width, 3), np.uint8)
                got = _fill(proc.stdout, memoryview(chunk).cast("B")) // frame_bytes
                if got:
                    yield index, chunk[:got]
                    index += got
                if got < n:
                    break
            del chunk
            if proc.wait() != 0:
                err.seek(0)
                raise MediaError(TRUNCATED, last_line(err.read()))
            if index != info.frames:   # damaged packets the decoder dropped
                err.seek(0)
                log.warning("%s: decoded %d frames, the container lists %d (%s)", path, index,
                            info.frames, last_line(err.read()))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()


# ---------------------------------------------------------------------------------- writing

def encode_frames(cmd: list[str], frames: Iterator[np.ndarray]) -> None:
    """Feed raw RGB frames to an ffmpeg command (which writes a staging file of the caller's);
    MediaError with plain words when ffmpeg fails."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            try:
                for frame in frames:
                    proc.stdin.write(np.ascontiguousarray(frame).data)
                proc.stdin.close()
            except BrokenPipeError:
                pass   # ffmpeg stopped early; its exit code and stderr say why
            if proc.wait() != 0:
                err.seek(0)
                raise _write_failed(err.read())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if not proc.stdin.closed:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()


def raw_video_input(width: int, height: int, fps) -> list[str]:
    """ffmpeg input arguments for raw RGB frames of this size and rate, fed through stdin."""
    fps = frame_rate(fps)
    return ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-framerate", f"{fps.numerator}/{fps.denominator}", "-i", "pipe:0"]


def write_segment(frames: np.ndarray, path, fps) -> None:
    """Encode one chunk (uint8 [n, H, W, 3] RGB) to an H.264 MP4 segment; same input, same bytes."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames must be uint8 [n, H, W, 3] with n >= 1, got "
                         f"{frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    with atomic_write(path) as tmp:
        encode_frames(command("-v", "error", *raw_video_input(width, height, fps), "-an", "-vf", TO_YUV,
                              *X264, "-preset", "veryfast", "-f", "mp4", str(tmp)), iter(frames))


def _concat_line(path: Path) -> str:
    # The concat list quotes with '...'; a quote inside is closed, escaped and reopened.
    return "file '" + str(path.resolve()).replace("'", "'\\''") + "'\n"


def concat_segments(segment_paths: Sequence, out_path, fps, audio_source=None) -> None:
    """Join H.264 segments (from write_segment, in order) into one browser-playable MP4.

    Video is stream-copied: segments carry no B-frames, so each starts exactly where the
    previous one ends. The first audio track of audio_source (if it has one) is muxed in:
    copied when it is AAC, else re-encoded to AAC. fps is checked against the segments.
    """
    segments = [Path(p) for p in segment_paths]
    if not segments:
        raise ValueError("no segments to concatenate")
    _, written = _count_packets(segments[0])
    if written is not None and abs(written / frame_rate(fps) - 1) > 1e-4:
        raise ValueError(f"segments were written at {written} fps, not {fps}")
    listing = staging_path(Path(out_path)).with_suffix(".txt")
    try:
        listing.write_text("ffconcat version 1.0\n" + "".join(_concat_line(p) for p in segments))
    except OSError as exc:
        listing.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise MediaError(DISK_FULL, str(exc)) from None
        raise

    audio = header(audio_source).audio_codec if audio_source is not None else None
    args = ["-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing)]
    if audio:
        args += ["-i", os.path.abspath(audio_source)]
    args += ["-map", "0:v:0", "-c:v", "copy"]
    if audio:
        args += ["-map", "1:a:0", "-c:a", "copy" if audio == "aac" else "aac"]
    args += ["-movflags", "+faststart", "-f", "mp4"]
    try:
        with atomic_write(out_path) as tmp:
            done = subprocess.run(command(*args, str(tmp)), stdin=subprocess.DEVNULL, capture_output=True)
            if done.returncode != 0:
                raise _write_failed(done.stderr)
    finally:
        listing.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- frames

def limit_pixels(frame: np.ndarray, max_pixels: int) -> tuple[np.ndarray, float]:
    """Shrink a frame (aspect kept, area averaging) so that width * height <= max_pixels.

    Returns (frame, scale) with scale = small width / original width; (the same array, 1.0)
    when it is already small enough.
    """
    if max_pixels < 1:
        raise ValueError("max_pixels must be at least 1")
    height, width = frame.shape[:2]
    if width * height <= max_pixels:
        return frame, 1.0
    factor = math.sqrt(max_pixels / (width * height))
    small_w, small_h = max(1, int(width * factor)), max(1, int(height * factor))
    small = Image.fromarray(frame).resize((small_w, small_h), Image.Resampling.BOX)
    return np.array(small), small_w / width   # np.array: a writable copy, unlike asarray


def restore_size(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bring a processed frame back to (height, width); the same array when it already is."""
    height, width = size
    if frame.shape[:2] == (height, width):
        return frame
    return np.array(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))
