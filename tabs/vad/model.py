"""Voice activity (silero-vad 6.2.3): where speech is in 16 kHz audio.

The model is the package's own `silero_vad_16k_sequence.onnx`, run by onnxruntime: the same LSTM
as the stock `silero_vad.onnx` (bit-identical probabilities; a test checks it), but it takes a
block of frames per call instead of one 32 ms frame, so 10 s of audio is one call, not 313.
Input: frames of 512 samples at 16 kHz, each prefixed by the last 64 samples of the frame before
(zeros for the first), shape [n, 576]; the LSTM state `h`, `c` [1, 1, 128] carries from one
block to the next, which is what lets a long file stream through in chunks.

We never import the `silero_vad` package: its `__init__` imports torch and calls
`torch.set_num_threads(1)`, which would slow every torch model in the process. Its speech
timestamp state machine (get_speech_timestamps_from_probs) is ported in `speech_segments`
(a test checks both agree). Cutting the silences out of a file is cut.py.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import Call, JobContext, ModelSpec, UserFacingError, seconds_bucket  # noqa: F401 (callers read it here)
from engine.files import save_arrays, write_json
from engine.media.audio import probe_audio, stream_audio
from engine.package_files import package_folder, reason_if_missing
from engine.runtimes import onnx_runtime

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


_MISSING = ("silero-vad is not installed: run ./setup.sh "
            "(it installs silero-vad==6.2.3, whose wheel holds the silero_vad ONNX weights)")
_WEIGHTS = "silero_vad_16k_sequence.onnx"


def model_path() -> Path:
    return package_folder("silero_vad", "data", [_WEIGHTS], _MISSING) / _WEIGHTS


def unavailable_reason() -> str | None:
    return reason_if_missing(model_path)


# ---------------------------------------------------------------------------------- model

def load(device: str):
    """An onnxruntime session on `device` ('cpu' or 'cuda:N'). On the CPU one thread: the LSTM is
    sequential, one thread is all it uses. Not a per-frame stream: a block of up to 512 frames
    (16 s) is one call, 1.2 MB in and 2 KB out, and one cuDNN LSTM over the sequence on a GPU.
    cuDNN's algorithm search is heuristic, since a file's last block has a new length every time."""
    return onnx_runtime.session(model_path(), device, threads=1,
                                cuda_options={"cudnn_conv_algo_search": "HEURISTIC"})


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


def detect_speech(call: Call, samples_16k: np.ndarray, threshold: float = 0.5,
                  min_speech_s: float = 0.25, min_silence_s: float = 0.1, pad_s: float = 0.03
                  ) -> list[dict]:
    """Speech segments [{"start", "end"}] in seconds of 16 kHz mono samples (settings as the
    capability's check allows them)."""
    samples = np.asarray(samples_16k, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        return []
    return segments_of(analyse(call, samples), threshold, min_speech_s, min_silence_s, pad_s)


@dataclass
class Analysis:
    """One VAD pass over a file: per-frame probabilities and peaks, and its length."""
    probs: np.ndarray
    peaks: np.ndarray
    n_samples: int

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE


def analyse(call: Call, samples: np.ndarray) -> Analysis:
    """The VAD over short 16 kHz mono samples in one lease. `call` is a run's: open it with
    `seconds_bucket` of the samples' length."""
    probs = call(VAD_MODEL, lambda session: speech_probs(session, samples)[0])
    return Analysis(probs, frame_peaks(samples), samples.size)


def segments_of(analysis: Analysis, threshold: float = 0.5, min_speech_s: float = 0.25,
                min_silence_s: float = 0.1, pad_s: float = 0.03) -> list[dict]:
    return speech_segments(analysis.probs, analysis.n_samples, threshold, min_speech_s, min_silence_s, pad_s)


def analyse_stream(ctx: JobContext, path: Path, progress_share: float = 1.0) -> Analysis:
    """The VAD over a long file in 30.72 s chunks, in order (the LSTM state carries over), with
    probabilities, peaks and state saved after each chunk: a killed job resumes where it was."""
    info = probe_audio(path)
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
               if k in ctx.params}  # checked at submit
    analysis = analyse_stream(ctx, ctx.input("audio"))
    result = ctx.work_dir / "segments.json"
    write_json(result, overview(analysis, segments_of(analysis, **options)))
    return str(result)


# ---------------------------------------------------------------------------------- catalog

def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=VAD_MODEL, role="interactive", runtime="onnxruntime", loader=load,
            device=onnx_runtime.spec_device(),
            source=f"silero-vad 6.2.3 wheel: data/{_WEIGHTS} (MIT)",
            # Measured on CPU: the session adds ~12 MiB RSS (30 MiB with onnxruntime's own import);
            # a pass peaks ~30 MiB above that (ONNX Runtime's arena; the 16 s blocks bound it).
            estimate_bytes=16 * MiB, run_estimate_bytes=32 * MiB,
            function="voice activity",
            description="Silero VAD: P(speech) per 32 ms of 16 kHz audio; speech segments, silence cuts"),
    ]
