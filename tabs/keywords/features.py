"""The front end of efficientword-net's ResNet-50 (Resnet50_Arc_loss in its audio_processing.py):
log mel filter-bank energies of a 1.5 s window at 16 kHz, as its `logfbank` computes them
(python_speech_features' recipe, carried in eff_word_net/audio_utils.py) with the settings
winlen 0.025, winstep 0.01, nfilt 64, nfft 512, preemph 0: 400-sample frames every 160 samples,
no window function, the last frame zero-padded past the window's end (149 frames), power
spectrum |rfft(frame, 512)|^2 / 512, 64 triangular mel filters over 0-8000 Hz on fft bins
floor(513 * mel2hz / 16000), zeros floored at float64 eps, natural log. float64 throughout, as
there; the network gets float32 [n, 1, 149, 64].

Not the wheel's logmelcalc.tflite: that graph (1 s in, 98 x 64 out) belongs to the retired
first_iteration_siamese model, which the package itself refuses to load.
A test checks these features against the package's own logfbank.
"""
from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 24000  # 1.5 s: the ResNet's fixed input (Resnet50_Arc_loss.window_length)
FRAME, HOP, NFFT, NFILT = 400, 160, 512, 64
FRAMES = 1 + -(-(WINDOW - FRAME) // HOP)  # 149
_PADDED = (FRAMES - 1) * HOP + FRAME  # 24080: the last frame runs 80 samples past the window


def _hz_to_mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel_to_hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


@functools.lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """[64, 257] triangular filters, rising from bin[j] to bin[j+1] and falling to bin[j+2]."""
    points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), NFILT + 2)
    bins = np.floor((NFFT + 1) * _mel_to_hz(points) / SAMPLE_RATE)
    filters = np.zeros((NFILT, NFFT // 2 + 1))
    index = np.arange(NFFT // 2 + 1)
    for j in range(NFILT):
        low, mid, high = bins[j], bins[j + 1], bins[j + 2]
        rising = (index >= low) & (index < mid)
        falling = (index >= mid) & (index < high)
        filters[j, rising] = (index[rising] - low) / (mid - low)
        filters[j, falling] = (high - index[falling]) / (high - mid)
    return filters


def log_mel(windows: np.ndarray) -> np.ndarray:
    """[n, 24000] samples (float in [-1, 1]) -> [n, 1, 149, 64] float32 network input."""
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, WINDOW)
    padded = np.zeros((len(windows), _PADDED))
    padded[:, :WINDOW] = windows
    frames = np.lib.stride_tricks.sliding_window_view(padded, FRAME, axis=1)[:, ::HOP]
    power = np.square(np.abs(np.fft.rfft(frames, NFFT))) / NFFT
    energies = power @ mel_filters().T
    energies[energies == 0] = np.finfo(float).eps
    return np.log(energies)[:, None].astype(np.float32)
