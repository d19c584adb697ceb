"""Pitch (F0) with swift-f0 0.3.0: its own `SwiftF0` detector (a 0.14 MB ONNX model run by
onnxruntime, numpy only) and its `segment_notes` for held notes.

The model sees 16 kHz mono audio and gives a pitch (46.9 - 2093.8 Hz) and a voicing confidence
for every 16 ms frame; a frame is voiced at confidence >= 0.5. Each frame depends on audio at
most 11 frames before and 10 after it, so a long file is cut into chunks that overlap by that
much and gives exactly the frames of one pass.

Requests are checked by the package's check() before they get here.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from engine import Call, JobContext, ModelSpec, seconds_bucket  # noqa: F401 (callers read it here)
from engine.files import save_arrays, write_json
from engine.media.audio import probe_audio, read_audio
from engine.package_files import package_folder, reason_if_missing
from engine.runtimes import onnx_runtime

MiB = 1024**2
PITCH_MODEL = "swift-f0"
PITCH_LONG = "pitch_long"
SAMPLE_RATE = 16000
HOP = 256  # samples per frame at 16 kHz (16 ms)
VOICED = 0.5  # swift-f0's calibrated voicing threshold
INTERACTIVE_MAX_S = 60.0
JOB_CHUNK_FRAMES = 3750  # 60 s per chunk
# The model's reach (swift_f0.core LEFT_FRAMES, LOOKAHEAD_FRAMES): context a chunk needs.
LEFT_FRAMES, RIGHT_FRAMES = 11, 10
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


_MISSING = ("swift-f0 is not installed: run ./setup.sh "
            "(it installs swift-f0==0.3.0, whose wheel holds the model.onnx pitch network)")


def model_path() -> Path:
    return package_folder("swift_f0", "", ["model.onnx"], _MISSING) / "model.onnx"


def unavailable_reason() -> str | None:
    return reason_if_missing(model_path)


def load(device: str):
    """swift-f0's detector on `device` ('cpu' or 'cuda:N'). spin=False: its CPU threads sleep
    between calls instead of busy-waiting, which costs ~1 ms a call and leaves the cores to other
    work on a server. On a GPU its CPU session is swapped for a CUDA one (the detector only calls
    `session.run`); cuDNN's algorithm search is heuristic, as every input length is a new shape."""
    from swift_f0 import SwiftF0

    path = model_path()  # a missing wheel says what to install
    detector = SwiftF0(spin=False)
    if device.startswith("cuda"):
        detector.session = onnx_runtime.session(path, device, cuda_options={"cudnn_conv_algo_search": "HEURISTIC"})
    return detector


def note_name(hz: float | None) -> str | None:
    """The nearest equal-tempered note, A4 = 440 Hz: 220 -> 'A3', 261.6 -> 'C4'."""
    if hz is None or not np.isfinite(hz) or hz <= 0:
        return None
    midi = math.floor(69 + 12 * math.log2(hz / 440.0) + 0.5)
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def summarize(result, notes=None, voicing: float = VOICED) -> dict:
    """The JSON answer: median pitch and its note, voiced frames [t, hz], held notes."""
    voiced = result.confidence >= voicing
    times, hz = result.timestamps[voiced], result.pitch_hz[voiced]
    median = round(float(np.median(hz)), 2) if hz.size else None
    return {
        "median_hz": median,
        "median_note": note_name(median),
        "voiced_s": round(float(voiced.sum() * HOP / SAMPLE_RATE), 3),
        "f0": [[round(float(t), 3), round(float(f), 2)] for t, f in zip(times, hz)],
        "notes": [{"start": round(n.start, 3), "end": round(n.end, 3), "hz": round(n.pitch_hz, 2),
                   "note": note_name(n.pitch_hz)} for n in (notes or [])],
    }


def mono(samples) -> np.ndarray:
    """float32 samples, stereo mixed down."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def pitch(call: Call, samples: np.ndarray, sr: int, voicing: float = VOICED) -> dict:
    """F0 of mono audio (any rate; resampled to 16 kHz by swift-f0's soxr). A frame counts as
    voiced at confidence >= `voicing` (0.5 is the model's calibration; pure sine tones under
    ~300 Hz score ~0.45, with the right pitch: 0.4 keeps them).

    Returns {"median_hz": float | None, "median_note": "A3" | None, "voiced_s",
    "f0": [[t, hz], ...] (voiced frames only), "notes": [{"start", "end", "hz", "note"}]}.
    """
    from swift_f0 import segment_notes

    samples = mono(samples)
    result = call(PITCH_MODEL, lambda detector: detector.detect(samples, int(sr)))
    return summarize(result, segment_notes(result), float(voicing))


def pitch_file(call: Call, path, voicing: float = VOICED,
               max_seconds: float | None = INTERACTIVE_MAX_S) -> dict:
    """pitch() of an audio file or a video's sound, decoded at 16 kHz by ffmpeg; MediaError for
    a file longer than max_seconds."""
    return pitch(call, read_audio(path, SAMPLE_RATE, max_seconds=max_seconds), SAMPLE_RATE, voicing)


def _chunk_frames(detector, path: Path, index: int):
    """Frames [index * N, (index + 1) * N) of the file, from audio that reaches 11 frames
    before and 10 after them: the same numbers as one pass over the whole file.
    Returns ((timestamps, pitch, confidence, loudness), whether frames follow)."""
    first = index * JOB_CHUNK_FRAMES
    left = min(first, LEFT_FRAMES)
    samples = read_audio(path, SAMPLE_RATE, start_s=(first - left) * HOP / SAMPLE_RATE,
                         duration_s=(left + JOB_CHUNK_FRAMES + RIGHT_FRAMES) * HOP / SAMPLE_RATE)
    result = detector.detect(samples, SAMPLE_RATE)
    # A frame needs a whole hop of audio; the next chunk has one if a hop lies past this one.
    has_more = samples.size >= (left + JOB_CHUNK_FRAMES + 1) * HOP
    keep = slice(left, left + JOB_CHUNK_FRAMES)
    pitch_hz, confidence, loudness = result.pitch_hz[keep], result.confidence[keep], result.loudness_db[keep]
    times = (np.arange(len(pitch_hz)) + first) * (HOP / SAMPLE_RATE)  # as swift-f0 stamps them
    return (times, pitch_hz, confidence, loudness), has_more


def pitch_job(ctx: JobContext) -> str:
    """Job kind pitch_long: param voicing; input 'audio'. Writes pitch.json (what pitch()
    returns). Each 60 s chunk's frames are saved before the next starts: a killed job resumes there."""
    from swift_f0 import PitchResult, segment_notes

    voicing = float(ctx.params.get("voicing", VOICED))
    source = ctx.input("audio")
    info = probe_audio(source)
    total = max(1, math.ceil((info.duration_s or 60.0) * SAMPLE_RATE / HOP / JOB_CHUNK_FRAMES))
    folder = ctx.work_dir / "pitch_chunks"
    folder.mkdir(exist_ok=True)
    index = 0
    while (folder / f"{index:05d}.npz").exists():
        index += 1
    if index:
        ctx.resumed_from(index * JOB_CHUNK_FRAMES * HOP / SAMPLE_RATE, "s")
    while not (folder / "last").exists():
        ctx.check_cancelled()
        frames, has_more = ctx.call(PITCH_MODEL, lambda d: _chunk_frames(d, source, index))
        save_arrays(folder / f"{index:05d}.npz", *frames)
        if not has_more:
            (folder / "last").touch()
        index += 1
        ctx.save_checkpoint(pitch_chunks=index)
        ctx.progress(0.95 * min(index / total, 1.0), f"pitch: {index} of {total} min")
    parts = [np.load(folder / f"{i:05d}.npz") for i in range(index)]
    result = PitchResult(*(np.concatenate([p[f"arr_{k}"] for p in parts]) for k in range(4)))
    out = ctx.work_dir / "pitch.json"
    write_json(out, summarize(result, segment_notes(result), voicing))
    return str(out)


def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=PITCH_MODEL, role="interactive", runtime="onnxruntime", loader=load,
            device=onnx_runtime.spec_device(),
            source="swift-f0 0.3.0 wheel: model.onnx (MIT)",
            # Measured on CPU: the session adds < 1 MiB RSS (its arena grows on first use); a 60 s
            # pass peaks ~96 MiB above it. Interactive calls and job chunks are at most 60 s.
            estimate_bytes=4 * MiB, run_estimate_bytes=128 * MiB,
            function="pitch (F0) of a voice",
            description="SwiftF0: pitch (F0) and voicing per 16 ms, 47 - 2094 Hz; notes"),
    ]
