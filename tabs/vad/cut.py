"""Cutting the silences out of audio or video, with the speech that voice activity found.

The speech segments found with `min_silence_s` are padded by `pad_s` (words keep their edges) and
every gap longer than `min_silence_s` goes. ffmpeg cuts picture and sound with trim/atrim + concat
at the same times (snapped to frame boundaries), so they stay in sync; a long file is cut in
groups of ranges, each its own part on disk, joined at the end.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from engine import JobContext, UserFacingError
from engine.files import atomic_write, staging_path
from engine.media.audio import probe_audio
from engine.media.ffmpeg import TO_YUV, X264, MediaError, command, last_line
from engine.media.video import probe

from .model import Analysis, analyse_stream, segments_of

GROUP_RANGES = 40  # kept ranges per ffmpeg run: each run splits its input once per range
DEFAULT_PAD_S = 0.15


def keep_ranges(segments: list[dict], duration_s: float, min_silence_s: float,
                pad_s: float = DEFAULT_PAD_S) -> list[tuple[float, float]]:
    """The parts to keep: everything but the gaps between speech longer than min_silence_s,
    each gap shrunk by pad_s on its speech sides (the file's own start and end get no pad)."""
    if not segments:
        return []
    edges = [0.0] + [x for s in segments for x in (s["start"], s["end"])] + [duration_s]
    cuts = []
    for a, b in zip(edges[::2], edges[1::2]):  # the gaps, leading and trailing included
        if b - a > min_silence_s:
            a2 = a + pad_s if a > 0 else a
            b2 = b - pad_s if b < duration_s else b
            if b2 > a2:
                cuts.append((a2, b2))
    keep, position = [], 0.0
    for a, b in cuts:
        if a > position:
            keep.append((position, a))
        position = b
    if position < duration_s:
        keep.append((position, duration_s))
    return keep


def plan_cut(analysis: Analysis, min_silence_s: float, pad_s: float = DEFAULT_PAD_S,
             threshold: float = 0.5) -> list[tuple[float, float]]:
    """Ranges to keep; a UserFacingError when no speech was found (nothing would be left)."""
    segments = segments_of(analysis, threshold, 0.25, min_silence_s, 0.0)
    keep = keep_ranges(segments, analysis.duration_s, min_silence_s, pad_s)
    if not keep:
        raise UserFacingError("No speech was found, so cutting the silence would leave nothing.")
    return keep


@dataclass(frozen=True)
class _Target:
    suffix: str  # of the output file
    video_codec: list[str]  # encoder arguments for the parts' picture (empty: audio only)
    audio_codec: list[str]  # encoder arguments for the joined sound track
    fps: Fraction | None


def _target(source: Path) -> _Target:
    info = probe_audio(source)
    if not info.has_video:
        return _Target(".wav", [], ["-c:a", "pcm_s16le"], None)
    fps = probe(source).fps
    suffix = source.suffix.lower()
    if suffix == ".webm":  # WebM holds only VP8/VP9/AV1 with Opus/Vorbis
        return _Target(".webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                                 "-row-mt", "1", "-crf", "32", "-b:v", "0", "-threads", "2"],
                       ["-c:a", "libopus", "-b:a", "128k"], fps)
    if suffix not in (".mp4", ".m4v", ".mov", ".mkv"):
        suffix = ".mp4"  # AVI, FLV, TS...: H.264 + AAC plays everywhere in an MP4
    return _Target(suffix, [*X264, "-preset", "veryfast"], ["-c:a", "aac", "-b:a", "160k"], fps)


def _snap(ranges: list[tuple[float, float]], fps: Fraction | None) -> list[tuple[float, float]]:
    """Cut on frame boundaries: each kept piece then holds whole frames and exactly as much
    sound, so no piece shifts the sound against the picture."""
    if fps is None:
        return ranges
    snapped = []
    for a, b in ranges:
        first, end = round(a * fps), round(b * fps)
        if end > first:
            snapped.append((float(first / fps), float(end / fps)))
    return snapped


def _graph(ranges: list[tuple[float, float]], offset: float, video: bool, fps: Fraction | None) -> str:
    """trim/atrim + concat over `ranges` (times relative to `offset`, where the input was sought)."""
    n = len(ranges)
    lines = [f"[0:a:0]asplit={n}" + "".join(f"[a{i}]" for i in range(n)) + ";"]
    if video:
        lines.append(f"[0:v:0]split={n}" + "".join(f"[v{i}]" for i in range(n)) + ";")
    half = float(0.5 / fps) if fps else 0.0
    for i, (a, b) in enumerate(ranges):
        a, b = max(0.0, a - offset), b - offset
        lines.append(f"[a{i}]atrim=start={a:.6f}:end={b:.6f},asetpts=PTS-STARTPTS[as{i}];")
        if video:
            # Half a frame early: a frame stamped 0.999999 for 1.0 is not lost to rounding.
            lines.append(f"[v{i}]trim=start={max(0.0, a - half):.6f}:end={b - half:.6f},"
                         f"setpts=PTS-STARTPTS[vs{i}];")
    pads = "".join(f"[vs{i}][as{i}]" if video else f"[as{i}]" for i in range(n))
    if video:
        lines.append(f"{pads}concat=n={n}:v=1:a=1[vc][a];")
        lines.append(f"[vc]{TO_YUV}[v]")
    else:
        lines.append(f"{pads}concat=n={n}:v=0:a=1[a]")
    return "\n".join(lines)


def _ffmpeg(args: list[str], what: str) -> None:
    done = subprocess.run(command("-v", "error", *args), stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode != 0:
        raise MediaError(f"The {what} could not be written.", last_line(done.stderr))


def render_part(source: Path, ranges: list[tuple[float, float]], out: Path, target: _Target) -> None:
    """One group of kept ranges as a part file: picture encoded, sound as PCM (exact joins)."""
    # Seek a second early and trim from there: the seek only saves decoding what comes before.
    offset = max(0.0, ranges[0][0] - 1.0)
    end = ranges[-1][1] + 1.0
    script = staging_path(out).with_suffix(".graph")
    video = bool(target.video_codec)
    script.write_text(_graph(ranges, offset, video, target.fps))
    args = ["-y", "-ss", f"{offset:.6f}", "-to", f"{end:.6f}", "-i", os.path.abspath(source),
            "-/filter_complex", str(script)]
    if video:
        args += ["-map", "[v]", *target.video_codec]
    args += ["-map", "[a]", "-c:a", "pcm_s16le", "-f", "matroska" if video else "wav"]
    try:
        with atomic_write(out) as tmp:
            _ffmpeg(args + [str(tmp)], "cut file")
    finally:
        script.unlink(missing_ok=True)


def join_parts(parts: list[Path], out: Path, target: _Target) -> Path:
    """Parts joined by stream copy (video) and one encode of the whole sound track."""
    listing = staging_path(out).with_suffix(".txt")
    listing.write_text("ffconcat version 1.0\n" + "".join(
        "file '" + str(p.resolve()).replace("'", "'\\''") + "'\n" for p in parts))
    args = ["-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
    if target.video_codec:
        args += ["-map", "0:v:0", "-c:v", "copy"]
    args += ["-map", "0:a:0", *target.audio_codec, "-map_metadata", "-1"]
    if target.suffix in (".mp4", ".m4v", ".mov"):
        args += ["-movflags", "+faststart"]
    try:
        with atomic_write(out, out.suffix) as tmp:  # the muxer is picked by the suffix
            _ffmpeg(args + [str(tmp)], "cut file")
    finally:
        listing.unlink(missing_ok=True)
    return out


def groups(ranges: list[tuple[float, float]], size: int = GROUP_RANGES) -> list[list[tuple[float, float]]]:
    return [ranges[i:i + size] for i in range(0, len(ranges), size)]


def output_name(source: Path, target: _Target) -> str:
    stem = re.sub(r"[^\w.-]+", "_", source.stem)[:80] or "audio"
    return f"{stem}_cut{target.suffix}"


def cut_file(source, keep: list[tuple[float, float]], out_dir,
             on_part: Callable[[int, int], Any] | None = None, parts_dir: Path | None = None,
             group_size: int = GROUP_RANGES) -> Path:
    """Write `source` with only the `keep` ranges into out_dir. Parts already in parts_dir are
    reused (a resumed job); on_part(done, total) runs after each part."""
    source = Path(source)
    target = _target(source)
    keep = _snap(keep, target.fps)
    if not keep:
        raise UserFacingError("Nothing is left to keep once the cuts are snapped to video frames.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        folder = Path(parts_dir) if parts_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(dir=out_dir)))
        folder.mkdir(parents=True, exist_ok=True)
        batches = groups(keep, group_size)
        parts = []
        for i, batch in enumerate(batches):
            part = folder / f"part{i:05d}.{'mkv' if target.video_codec else 'wav'}"
            if not part.exists():
                render_part(source, batch, part, target)
            parts.append(part)
            if on_part:
                on_part(i + 1, len(batches))
        result = join_parts(parts, out_dir / output_name(source, target), target)
        if parts_dir:
            shutil.rmtree(folder, ignore_errors=True)  # the result is complete: parts are done with
    return result


def cut_silence(analysis: Analysis, path, min_silence_s: float = 0.5, pad_s: float = DEFAULT_PAD_S,
                out_dir=None, threshold: float = 0.5) -> Path:
    """Remove silences longer than min_silence_s from a short audio file (WAV out) or video
    (same container, picture and sound cut together), given its VAD `analysis`. Longer inputs:
    job cut_silence_long."""
    keep = plan_cut(analysis, min_silence_s, pad_s, threshold)
    return cut_file(path, keep, out_dir or tempfile.mkdtemp(prefix="wimmel_cut_"))


def cut_silence_job(ctx: JobContext) -> str:
    """Job kind cut_silence_long: params min_silence_s, pad_s, threshold; input 'media'.
    The VAD pass (30% of the progress) and each part are checkpoints; params checked at submit."""
    min_silence_s = float(ctx.params.get("min_silence_s", 0.5))
    pad_s = float(ctx.params.get("pad_s", DEFAULT_PAD_S))
    threshold = float(ctx.params.get("threshold", 0.5))
    source = ctx.input("media")
    analysis = analyse_stream(ctx, source, progress_share=0.3)
    keep = plan_cut(analysis, min_silence_s, pad_s, threshold)

    def on_part(done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.save_checkpoint(parts_done=done)
        ctx.progress(0.3 + 0.65 * done / total, f"cutting: part {done} of {total}")

    return str(cut_file(source, keep, ctx.work_dir / "result", on_part, parts_dir=ctx.work_dir / "parts"))
