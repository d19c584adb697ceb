"""The static ffmpeg of the imageio-ffmpeg wheel (there is no system ffmpeg and no ffprobe):
how to call it, what it says about a file, its H.264 settings, and MediaError, the plain-words
failure every media module raises. Shared by video, audio, VAD cuts and subtitle burn-in."""
from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

from ..errors import UserFacingError

# What a user sees. ffmpeg's own words stay in MediaError.detail, for logs.
EMPTY_OR_CORRUPT = "The video could not be read: it is empty or corrupt."
TRUNCATED = "The video could not be read: it is truncated or corrupt."
NOT_A_VIDEO = "This file is not a video, or its format is not supported."
NO_VIDEO_STREAM = "This file has no video stream."
NO_FFMPEG = "Video support is unavailable: ffmpeg was not found."

# Browser-playable H.264: yuv420p, tagged BT.709 so players and our own decoder agree on colours.
# Same frames in, same bytes out, on any machine: x264's output depends on its thread count
# ("auto" follows the CPU count), so it is fixed; swscale's bitexact flag avoids CPU-specific
# SIMD rounding; the muxer's bitexact flag keeps version strings out.
# No B-frames: a segment with B-frames starts its DTS one or two frames early, by an amount
# that varies with its length, and joined segments then get DTS jumps and a wrong duration.
X264 = ["-c:v", "libx264", "-crf", "18", "-bf", "0", "-threads", "2",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"]
# yuv420p needs even sides: an odd frame gets one black row/column rather than an error.
TO_YUV = ("scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+bitexact,"
           "pad=ceil(iw/2)*2:ceil(ih/2)*2,format=yuv420p,"
           "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709")


class MediaError(UserFacingError, ValueError):
    """A media problem a user can act on, in plain words (shown as it is, like every
    UserFacingError). `detail` holds ffmpeg's last stderr line, for logs."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped in the imageio-ffmpeg wheel."""
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise MediaError(NO_FFMPEG, str(exc)) from None


def command(*args: str) -> list[str]:
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]


def last_line(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class Prober:
    """Reads what a media file holds and remembers the answer while the file stays unchanged.

    Probing costs ffmpeg runs (counting a video's frames demuxes the whole file), and one upload
    is asked about by the tab's check, the handler, at submit and by the job. What a file holds
    is a fact of the file, not of an engine: one Prober per kind of answer serves the process
    (video.probe, audio.probe_audio), and a file is known by its path, size, modification time
    and inode, so a rewritten file is read again. Failures are not remembered. Thread-safe; the
    latest `keep` files are remembered."""

    def __init__(self, read: Callable[[str | os.PathLike], Any], keep: int = 64):
        self.read, self.keep = read, keep
        self._known: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def probe(self, path):
        ffmpeg_exe()  # no ffmpeg is an error whatever is remembered
        try:
            stat = os.stat(path)
        except OSError:
            return self.read(path)  # says what is wrong in plain words
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                return self._known[key]
        info = self.read(path)
        with self._lock:
            self._known[key] = info
            while len(self._known) > self.keep:
                self._known.popitem(last=False)
        return info


@dataclasses.dataclass
class Header:
    """What `ffmpeg -i` prints about a file (there is no ffprobe in the wheel)."""
    format: str
    duration_s: float | None
    video: str | None          # the first real video stream's line and its indented block
    audio_codec: str | None
    audio: str | None = None   # the first audio stream's line (codec, rate, layout)


def header(path) -> Header:
    path = Path(path)
    if not path.is_file():
        raise MediaError("The video file was not found.")
    if path.stat().st_size == 0:
        raise MediaError(EMPTY_OR_CORRUPT, "empty file")
    # With no output file ffmpeg prints the input's header and exits 1; that is all we need.
    text = subprocess.run(command("-i", os.path.abspath(path)), capture_output=True,
                          text=True, errors="replace").stderr
    found = re.search(r"^Input #0, (.+?), from ", text, re.M)
    if not found:
        detail = last_line(text)
        if "misdetection possible" in text or "moov atom not found" not in text:
            raise MediaError(NOT_A_VIDEO, detail)
        raise MediaError(TRUNCATED, detail)   # an MP4 cut before its index (moov)
    fmt = found.group(1)
    duration = None
    if m := re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text):
        duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    # Split into stream blocks: "Stream #0:1..." plus its more indented lines (metadata, side data).
    video = audio = None
    for block in re.split(r"\n(?=\s*Stream #)", text)[1:]:
        kind = re.match(r"\s*Stream #\S+: (\w+): (\S+)", block)
        if not kind:
            continue
        # Cover art in music files is a "video" stream too; it is not a video.
        if kind[1] == "Video" and video is None and "(attached pic)" not in block.splitlines()[0]:
            video = block
        elif kind[1] == "Audio" and audio is None:
            audio, audio_line = kind[2].rstrip(","), block.splitlines()[0].strip()
    return Header(fmt, duration, video, audio, audio_line if audio else None)
