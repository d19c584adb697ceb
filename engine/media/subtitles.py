"""Subtitles from timed transcripts: cues, SRT and WebVTT text, and subtitles put into a video.

A transcript is a list of segments {"start", "end", "text", "words": [{"start", "end", "word"}]}
(seconds). Cues are (start, end, text) with at most two lines of `MAX_LINE` characters and
`MAX_CUE_S` seconds each, cut between words, preferably after a sentence ends.

Into a video, subtitles go either as a soft track (mov_text in MP4: players can switch them off)
or burned into the picture with the wheel's ffmpeg `subtitles` filter (libass). The burned font
is Pillow's bundled Aileron, handed to libass through `fontsdir`: the same look on every machine,
and text even where no system font is installed (libass still falls back to system fonts for
glyphs Aileron lacks).
"""
from __future__ import annotations

import base64
import functools
import inspect
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from engine.files import atomic_write
from engine.media.ffmpeg import X264, MediaError, command, header, last_line

MAX_LINE = 42  # characters per line: the common broadcast and Netflix limit
MAX_LINES = 2
MAX_CUE_S = 7.0  # longer cues stay on screen past the speech they belong to
MIN_CUE_S = 0.2  # a cue shorter than this cannot be read; extended when there is room
MAX_GAP_S = 1.0  # a pause this long between words ends a cue: no text on screen over silence
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*$")

BURN_FAILED = "The subtitles could not be burned into the video."
MUX_FAILED = "The subtitles could not be added to the video."

Cue = tuple[float, float, str]


# ---------------------------------------------------------------------------------- times

def _clock(seconds: float) -> tuple[int, int, int, int]:
    ms = max(0, int(round(seconds * 1000)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return hours, minutes, secs, ms


def srt_time(seconds: float) -> str:
    """00:01:02,345: SRT's HH:MM:SS,mmm, rounded to the millisecond."""
    return "{:02d}:{:02d}:{:02d},{:03d}".format(*_clock(seconds))


def vtt_time(seconds: float) -> str:
    """00:01:02.345: WebVTT's HH:MM:SS.mmm (hours always written)."""
    return "{:02d}:{:02d}:{:02d}.{:03d}".format(*_clock(seconds))


# ---------------------------------------------------------------------------------- cues

def wrap(text: str, width: int = MAX_LINE) -> str:
    """One line when it fits, else lines of at most `width` split at spaces; two lines are split
    at the space nearest the middle, so they come out about the same length."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    middle = len(text) / 2
    fitting = [i for i in spaces if i <= width and len(text) - i - 1 <= width]
    if fitting:
        cut = min(fitting, key=lambda i: abs(i - middle))
        return text[:cut] + "\n" + text[cut + 1:]
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join(lines + [line])


def _words(segment: dict) -> list[dict]:
    return [w for w in segment.get("words") or [] if str(w.get("word", "")).strip()]


def segment_cues(segments: list[dict], max_chars: int = MAX_LINE * MAX_LINES,
                 max_s: float = MAX_CUE_S) -> list[Cue]:
    """Cues that follow the speech: each segment cut between words into readable pieces."""
    cues: list[Cue] = []
    for segment in segments:
        words = _words(segment)
        if not words:  # no word timings: the segment as it is
            if segment["text"].strip():
                cues.append((segment["start"], segment["end"], segment["text"].strip()))
            continue
        group: list[dict] = []
        for word in words:
            if group:
                text = " ".join(w["word"].strip() for w in group + [word])
                too_long = len(text) > max_chars or word["end"] - group[0]["start"] > max_s
                # Finish a cue at a sentence end once it holds a line's worth of text.
                sentence_done = (_SENTENCE_END.search(group[-1]["word"].strip())
                                 and len(text) - len(word["word"].strip()) > max_chars // 2)
                pause = word["start"] - group[-1]["end"] > MAX_GAP_S
                if too_long or sentence_done or pause:
                    cues.append(_cue(group))
                    group = []
            group.append(word)
        cues.append(_cue(group))
    return _tidy(cues)


def word_cues(segments: list[dict]) -> list[Cue]:
    """One cue per word, for word-by-word subtitles or a karaoke-style check of the timing."""
    return _tidy([(w["start"], w["end"], w["word"].strip()) for s in segments for w in _words(s)])


def _cue(words: list[dict]) -> Cue:
    return words[0]["start"], words[-1]["end"], " ".join(w["word"].strip() for w in words)


def _tidy(cues: list[Cue]) -> list[Cue]:
    """In time order, no overlaps, each readable for at least MIN_CUE_S where the next allows."""
    cues = sorted((float(a), float(b), t) for a, b, t in cues if t.strip())
    tidy = []
    for i, (start, end, text) in enumerate(cues):
        following = cues[i + 1][0] if i + 1 < len(cues) else None
        end = max(end, start + MIN_CUE_S)
        if following is not None:
            end = min(end, max(following, start + 0.001))
        tidy.append((start, end, text))
    return tidy


def cues_for(segments: list[dict], timestamps: str = "segment") -> list[Cue]:
    if timestamps == "word":
        return word_cues(segments)
    if timestamps == "segment":
        return segment_cues(segments)
    raise ValueError(f"timestamps must be 'segment' or 'word', not {timestamps!r}")


def to_srt(cues: list[Cue]) -> str:
    """Numbered SRT cues, two lines at most each, separated by blank lines."""
    return "".join(f"{n}\n{srt_time(a)} --> {srt_time(b)}\n{wrap(text)}\n\n"
                   for n, (a, b, text) in enumerate(cues, 1))


def to_vtt(cues: list[Cue]) -> str:
    """A WebVTT file: the header, then cues without numbers."""
    return "WEBVTT\n\n" + "".join(f"{vtt_time(a)} --> {vtt_time(b)}\n{wrap(text)}\n\n" for a, b, text in cues)


# ---------------------------------------------------------------------------------- video

@functools.lru_cache(maxsize=1)
def _font_dir() -> Path:
    """A folder holding Pillow's embedded Aileron Regular as a TTF file, for libass."""
    from PIL import ImageFont

    folder = Path(tempfile.gettempdir()) / "wimmel-subtitle-font"
    font = folder / "Aileron-Regular.ttf"
    if not font.is_file():
        # Pillow carries the font as base64 inside load_default (since 10.1), not as a file.
        blobs = re.findall(rb'b"""(.*?)"""', inspect.getsource(ImageFont.load_default).encode(), re.S)
        data = base64.b64decode(b"".join(blobs[-1].split())) if blobs else b""
        if not data.startswith(b"\x00\x01\x00\x00"):
            raise MediaError(BURN_FAILED, "Pillow's embedded font was not found")
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(font) as tmp:
            tmp.write_bytes(data)
    return folder


def _video_codec(path) -> str | None:
    head = header(path)
    if head.video is None:
        return None
    found = re.search(r"Video: (\w+)", head.video)
    return found[1] if found else None


def _run(args: list[str], cwd: str | None, failure: str) -> None:
    done = subprocess.run(command(*args), stdin=subprocess.DEVNULL, capture_output=True, cwd=cwd)
    if done.returncode != 0:
        raise MediaError(failure, last_line(done.stderr))


def add_soft_subtitles(video, srt_path, out_path) -> Path:
    """An MP4 with the subtitles as a switchable track (mov_text, English). Picture and sound are
    copied when a browser plays them in MP4 (H.264, AAC/MP3), else re-encoded to H.264/AAC."""
    head = header(video)
    if head.video is None:
        raise MediaError("This file has no video stream.")
    copy_video = _video_codec(video) == "h264"
    copy_audio = head.audio_codec in ("aac", "mp3")
    out_path = Path(out_path)
    args = ["-v", "error", "-y", "-i", os.path.abspath(video), "-i", os.path.abspath(srt_path),
            "-map", "0:v:0", "-map", "0:a:0?", "-map", "1:0",
            *(["-c:v", "copy"] if copy_video else X264 + ["-preset", "veryfast", "-pix_fmt", "yuv420p"]),
            "-c:a", "copy" if copy_audio else "aac", "-c:s", "mov_text",
            "-metadata:s:s:0", "language=eng", "-movflags", "+faststart", "-f", "mp4"]
    with atomic_write(out_path) as tmp:
        _run(args + [str(tmp)], None, MUX_FAILED)
    return out_path


def burn_subtitles(video, srt_path, out_path) -> Path:
    """An H.264 MP4 with the subtitles drawn into every frame (libass); frames, fps and sound kept."""
    head = header(video)
    if head.video is None:
        raise MediaError("This file has no video stream.")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as work, atomic_write(out_path) as tmp:
        # Relative names in a folder of our own: no escaping of paths inside the filter graph.
        shutil.copyfile(srt_path, Path(work) / "subs.srt")
        shutil.copytree(_font_dir(), Path(work) / "fonts")
        style = "FontName=Aileron,FontSize=18,Outline=1.2,Shadow=0,MarginV=16"
        graph = (f"subtitles=filename=subs.srt:fontsdir=fonts:force_style='{style}',"
                 "pad=ceil(iw/2)*2:ceil(ih/2)*2,format=yuv420p")
        args = ["-v", "error", "-y", "-i", os.path.abspath(video), "-map", "0:v:0", "-map", "0:a:0?",
                "-vf", graph, "-fps_mode", "passthrough", *X264, "-preset", "veryfast",
                *(["-c:a", "copy"] if head.audio_codec == "aac" else ["-c:a", "aac", "-b:a", "160k"]),
                "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        _run(args, work, BURN_FAILED)
    return out_path
