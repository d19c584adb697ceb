"""Voice activity (silero-vad 6.2.3) and cutting the silences out of audio or video.

The model is the package's own `silero_vad_16k_sequence.onnx`, run by onnxruntime: the same LSTM
as the stock `silero_vad.onnx` (bit-identical probabilities; a test checks it), but it takes a
block of frames per call instead of one 32 ms frame, so 10 s of audio is one call, not 313.
Input: frames of 512 samples at 16 kHz, each prefixed by the last 64 samples of the frame before
(zeros for the first), shape [n, 576]; the LSTM state `h`, `c` [1, 1, 128] carries from one
block to the next, which is what lets a long file stream through in chunks.

We never import the `silero_vad` package: its `__init__` imports torch and calls
`torch.set_num_threads(1)`, which would slow every torch model in the process. Its speech
timestamp state machine (get_speech_timestamps_from_probs) is ported in `speech_segments`
(a test checks both agree).

Cutting: the speech segments found with `min_silence_s` are padded by `pad_s` (words keep their
edges) and every gap longer than `min_silence_s` goes. ffmpeg cuts picture and sound with
trim/atrim + concat at the same times (snapped to frame boundaries), so they stay in sync;
a long file is cut in groups of ranges, each its own part on disk, joined at the end.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine import Engine, JobContext, JobKind, ModelSpec, UserFacingError
from engine.files import atomic_write, save_arrays, staging_path, write_json
from engine.media.audio import probe_audio, read_audio, stream_audio
from engine.runtimes import onnx_runtime
from engine.media.ffmpeg import TO_YUV, X264, MediaError, command, last_line
from engine.media.video import probe
from engine.package_files import package_folder, reason_if_missing

MiB = 1024**2
VAD_MODEL = "silero-vad"
SAMPLE_RATE = 16000
FRAME = 512  # samples per probability at 16 kHz
CONTEXT = 64  # samples of the previous frame the model sees with each frame
FRAME_S = FRAME / SAMPLE_RATE
BLOCK_FRAMES = 512  # frames per ONNX call (16.4 s): bounded memory for any length
INTERACTIVE_MAX_S = 60.0  # longer inputs go to the job queue
# 960 frames (30.72 s): a whole number of frames, so streamed chunks give the same
# probabilities as one pass over the file.
JOB_CHUNK_S = 960 * FRAME_S
GROUP_RANGES = 40  # kept ranges per ffmpeg run: each run splits its input once per range
DEFAULT_PAD_S = 0.15

_MISSING = ("silero-vad is not installed: run ./setup.sh "
            "(it installs silero-vad==6.2.3, whose wheel holds the silero_vad ONNX weights)")
_WEIGHTS = "silero_vad_16k_sequence.onnx"


def model_path() -> Path:
    return package_folder("silero_vad", "data", [_WEIGHTS], _MISSING) / _WEIGHTS


def unavailable_reason() -> str | None:
    return reason_if_missing(model_path)


def seconds_bucket(seconds: float) -> str:
    """Input-size bucket for audio: the length rounded up to a power of two seconds ('16s')."""
    return f"{2 ** max(0, math.ceil(math.log2(max(seconds, 1.0))))}s"


# ---------------------------------------------------------------------------------- model

def load(device: str):
    """An onnxruntime session on the CPU (the LSTM is sequential: one thread is all it uses)."""
    return onnx_runtime.session(model_path(), "cpu", threads=1)


@dataclass
class VadState:
    """What carries from one chunk to the next: the LSTM state and the last 64 samples."""
    h: np.ndarray
    c: np.ndarray
    context: np.ndarray

    @classmethod
    def fresh(cls) -> "VadState":
        zeros = np.zeros((1, 1, 128), np.float32)
        return cls(zeros, zeros.copy(), np.zeros(CONTEXT, np.float32))


def speech_probs(session, samples: np.ndarray, state: VadState | None = None
                 ) -> tuple[np.ndarray, VadState]:
    """P(speech) for every 32 ms frame of 16 kHz mono float32 samples, and the state after them.

    A chunk whose length is not a multiple of 512 is zero-padded: only the last chunk may be.
    """
    state = state or VadState.fresh()
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    count = -(-samples.size // FRAME)
    frames = np.zeros((count, FRAME), np.float32)
    frames.reshape(-1)[: samples.size] = samples
    probs = []
    h, c, previous = state.h, state.c, state.context
    for first in range(0, count, BLOCK_FRAMES):
        block = frames[first:first + BLOCK_FRAMES]
        contexts = np.empty((len(block), CONTEXT), np.float32)
        contexts[0] = previous
        contexts[1:] = block[:-1, -CONTEXT:]
        values, h, c = session.run(["speech_probs", "hn", "cn"],
                                   {"input": np.concatenate([contexts, block], axis=1), "h": h, "c": c})
        probs.append(np.asarray(values, np.float32).reshape(-1))
        previous = block[-1, -CONTEXT:].copy()
    out = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    return out, VadState(h, c, previous)


def frame_peaks(samples: np.ndarray) -> np.ndarray:
    """Loudest |sample| of each 512-sample frame: enough to draw a waveform of any length."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    count = -(-samples.size // FRAME)
    padded = np.zeros(count * FRAME, np.float32)
    padded[: samples.size] = np.abs(samples)
    return padded.reshape(count, FRAME).max(axis=1)


def speech_segments(probs, n_samples: int, threshold: float = 0.5, min_speech_s: float = 0.25,
                    min_silence_s: float = 0.1, pad_s: float = 0.03,
                    neg_threshold: float | None = None) -> list[dict]:
    """silero's get_speech_timestamps_from_probs (no max speech length), in seconds.

    Speech starts at a frame >= threshold and ends once frames stay below neg_threshold
    (threshold - 0.15: hysteresis) for min_silence_s; segments shorter than min_speech_s are
    dropped; each is padded by pad_s, or by half the gap when two are closer than 2 * pad_s.
    """
    sr = SAMPLE_RATE
    min_speech, min_silence, pad = sr * min_speech_s, sr * min_silence_s, sr * pad_s
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    speeches: list[dict] = []
    start: int | None = None
    temp_end = 0  # where a silence inside speech began (0: none)
    for i, prob in enumerate(probs):
        sample = FRAME * i
        if prob >= threshold and temp_end:
            temp_end = 0
        if prob >= threshold and start is None:
            start = sample
            continue
        if prob < neg_threshold and start is not None:
            if not temp_end:
                temp_end = sample
            if sample - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                speeches.append({"start": start, "end": temp_end})
            start, temp_end = None, 0
    if start is not None and n_samples - start > min_speech:
        speeches.append({"start": start, "end": n_samples})

    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - pad))
        if i != len(speeches) - 1:
            gap = speeches[i + 1]["start"] - speech["end"]
            if gap < 2 * pad:
                speech["end"] += int(gap // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - gap // 2))
            else:
                speech["end"] = int(min(n_samples, speech["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            speech["end"] = int(min(n_samples, speech["end"] + pad))
    return [{"start": round(s["start"] / sr, 3), "end": round(s["end"] / sr, 3)} for s in speeches]


def check_options(threshold: float = 0.5, min_speech_s: float = 0.25, min_silence_s: float = 0.1,
                  pad_s: float = 0.03) -> None:
    """A UserFacingError for settings that make no sense, before any work starts."""
    if not 0.0 < threshold < 1.0:
        raise UserFacingError(f"The threshold must be between 0 and 1, not {threshold}.")
    for name, value, low in (("min_speech_s", min_speech_s, 0.0), ("min_silence_s", min_silence_s, 0.03),
                             ("pad_s", pad_s, 0.0)):
        if not low <= value <= 600:
            raise UserFacingError(f"{name} must be between {low:g} and 600 seconds, not {value}.")


def detect_speech(engine: Engine, samples_16k: np.ndarray, threshold: float = 0.5,
                  min_speech_s: float = 0.25, min_silence_s: float = 0.1, pad_s: float = 0.03
                  ) -> list[dict]:
    """Speech segments [{"start", "end"}] in seconds of 16 kHz mono samples."""
    check_options(threshold, min_speech_s, min_silence_s, pad_s)
    samples = np.asarray(samples_16k, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        return []
    probs = engine.infer("detect_speech", VAD_MODEL, lambda s: speech_probs(s, samples)[0],
                         bucket=seconds_bucket(samples.size / SAMPLE_RATE))
    return speech_segments(probs, samples.size, threshold, min_speech_s, min_silence_s, pad_s)


@dataclass
class Analysis:
    """One VAD pass over a file: per-frame probabilities and peaks, and its length."""
    probs: np.ndarray
    peaks: np.ndarray
    n_samples: int

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE


def analyse_file(engine: Engine, path, max_seconds: float | None = INTERACTIVE_MAX_S) -> Analysis:
    """Decode a short file (audio, or a video's sound) and run the VAD over it in one call."""
    samples = read_audio(path, SAMPLE_RATE, max_seconds=max_seconds)
    probs = engine.infer("detect_speech", VAD_MODEL, lambda s: speech_probs(s, samples)[0],
                         bucket=seconds_bucket(samples.size / SAMPLE_RATE))
    return Analysis(probs, frame_peaks(samples), samples.size)


def segments_of(analysis: Analysis, threshold: float = 0.5, min_speech_s: float = 0.25,
                min_silence_s: float = 0.1, pad_s: float = 0.03) -> list[dict]:
    check_options(threshold, min_speech_s, min_silence_s, pad_s)
    return speech_segments(analysis.probs, analysis.n_samples, threshold, min_speech_s, min_silence_s, pad_s)


def analyse_stream(ctx: JobContext, path: Path, progress_share: float = 1.0) -> Analysis:
    """The VAD over a long file in 30.72 s chunks, in order (the LSTM state carries over), with
    probabilities, peaks and state saved after each chunk: a killed job resumes where it was."""
    try:
        info = probe_audio(path)
    except MediaError as exc:
        raise UserFacingError(str(exc)) from exc
    state_file = ctx.work_dir / "vad_state.npz"
    fresh = VadState.fresh()
    saved = dict(np.load(state_file)) if state_file.exists() else dict(
        chunks=0, n_samples=0, probs=np.zeros(0, np.float32), peaks=np.zeros(0, np.float32),
        h=fresh.h, c=fresh.c, context=fresh.context, final=False)
    if not saved["final"]:
        chunks = int(saved["chunks"])
        if chunks:
            ctx.resumed_from(chunks * JOB_CHUNK_S, "s")
        total = max(1, math.ceil((info.duration_s or JOB_CHUNK_S) / JOB_CHUNK_S))
        state = VadState(saved["h"], saved["c"], saved["context"])
        try:
            with contextlib.closing(stream_audio(path, SAMPLE_RATE, JOB_CHUNK_S,
                                                 start_s=chunks * JOB_CHUNK_S)) as pieces:
                for _, chunk in pieces:
                    ctx.check_cancelled()
                    values, state = ctx.call(VAD_MODEL, lambda s: speech_probs(s, chunk, state))
                    chunks += 1
                    saved.update(chunks=chunks, n_samples=int(saved["n_samples"]) + chunk.size,
                                 probs=np.concatenate([saved["probs"], values]),
                                 peaks=np.concatenate([saved["peaks"], frame_peaks(chunk)]),
                                 h=state.h, c=state.c, context=state.context,
                                 # Only the last chunk is short (and was zero-padded to whole frames).
                                 final=chunk.size < round(JOB_CHUNK_S * SAMPLE_RATE))
                    save_arrays(state_file, **saved)
                    ctx.save_checkpoint(vad_chunks=chunks)
                    ctx.progress(progress_share * min(chunks / total, 1.0),
                                 f"voice activity: {chunks * JOB_CHUNK_S / 60:.1f} of "
                                 f"{(info.duration_s or 0) / 60:.1f} min")
        except MediaError as exc:
            raise UserFacingError(str(exc)) from exc
        saved["final"] = True
        save_arrays(state_file, **saved)
    if int(saved["n_samples"]) == 0:
        raise UserFacingError("The audio could not be read: it is empty, or corrupt.")
    return Analysis(saved["probs"], saved["peaks"], int(saved["n_samples"]))


def overview(analysis: Analysis, segments: list[dict], points: int = 2000) -> dict:
    """What a plot needs, small whatever the length: peaks and P(speech) on <= `points` steps."""
    group = max(1, math.ceil(len(analysis.peaks) / points))
    count = math.ceil(len(analysis.peaks) / group)

    def reduce(values: np.ndarray) -> list[float]:
        padded = np.zeros(count * group, np.float32)
        padded[: len(values)] = values
        return [round(float(v), 4) for v in padded.reshape(count, group).max(axis=1)]

    return {"segments": segments, "duration_s": round(analysis.duration_s, 3),
            "step_s": group * FRAME_S, "peaks": reduce(analysis.peaks), "probs": reduce(analysis.probs)}


def detect_speech_job(ctx: JobContext) -> str:
    """Job kind detect_speech_long: params threshold, min_speech_s, min_silence_s, pad_s; input
    'audio'. Writes segments.json: {"segments", "duration_s", "step_s", "peaks", "probs"}."""
    options = {k: float(ctx.params[k]) for k in ("threshold", "min_speech_s", "min_silence_s", "pad_s")
               if k in ctx.params}
    check_options(**options)
    analysis = analyse_stream(ctx, ctx.input("audio"))
    result = ctx.work_dir / "segments.json"
    write_json(result, overview(analysis, segments_of(analysis, **options)))
    return str(result)


# ---------------------------------------------------------------------------------- cutting

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
    if not 0.1 <= min_silence_s <= 600:
        raise UserFacingError(f"min_silence_s must be between 0.1 and 600 seconds, not {min_silence_s}.")
    if not 0.0 <= pad_s <= 2.0:
        raise UserFacingError(f"pad_s must be between 0 and 2 seconds, not {pad_s}.")
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
    try:
        info = probe_audio(source)
    except MediaError as exc:
        raise UserFacingError(str(exc)) from exc
    if not info.has_video:
        return _Target(".wav", [], ["-c:a", "pcm_s16le"], None)
    try:
        fps = probe(source).fps
    except MediaError as exc:
        raise UserFacingError(str(exc)) from exc
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
        try:
            for i, batch in enumerate(batches):
                part = folder / f"part{i:05d}.{'mkv' if target.video_codec else 'wav'}"
                if not part.exists():
                    render_part(source, batch, part, target)
                parts.append(part)
                if on_part:
                    on_part(i + 1, len(batches))
            result = join_parts(parts, out_dir / output_name(source, target), target)
        except MediaError as exc:
            raise UserFacingError(str(exc)) from exc
        if parts_dir:
            shutil.rmtree(folder, ignore_errors=True)  # the result is complete: parts are done with
    return result


def cut_silence(engine: Engine, path, min_silence_s: float = 0.5, pad_s: float = DEFAULT_PAD_S,
                out_dir=None, threshold: float = 0.5) -> Path:
    """Remove silences longer than min_silence_s from a short audio file (WAV out) or video
    (same container, picture and sound cut together). Longer inputs: job cut_silence_long."""
    try:
        analysis = analyse_file(engine, path)
    except MediaError as exc:
        raise UserFacingError(str(exc)) from exc
    keep = plan_cut(analysis, min_silence_s, pad_s, threshold)
    return cut_file(path, keep, out_dir or tempfile.mkdtemp(prefix="wimmel_cut_"))


def cut_silence_job(ctx: JobContext) -> str:
    """Job kind cut_silence_long: params min_silence_s, pad_s, threshold; input 'media'.
    The VAD pass (30% of the progress) and each part are checkpoints."""
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


# ---------------------------------------------------------------------------------- catalog

def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=VAD_MODEL, role="interactive", runtime="onnxruntime", loader=load, device="cpu",
            source=f"silero-vad 6.2.3 wheel: data/{_WEIGHTS} (MIT)",
            # Measured on CPU: the session adds ~12 MiB RSS (30 MiB with onnxruntime's own import);
            # a pass peaks ~30 MiB above that (ONNX Runtime's arena; the 16 s blocks bound it).
            estimate_bytes=16 * MiB, run_estimate_bytes=32 * MiB,
            description="Silero VAD: P(speech) per 32 ms of 16 kHz audio; speech segments, silence cuts"),
    ]


def job_kinds() -> list[JobKind]:
    return [JobKind("detect_speech_long", VAD_MODEL, detect_speech_job),
            JobKind("cut_silence_long", VAD_MODEL, cut_silence_job)]
