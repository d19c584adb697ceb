"""The driving audio as Wav2Lip hears it: a mel spectrogram made exactly as Wav2Lip's audio.py with
its hparams.py (docs/face_studio_facts.md §3 "Mel settings", "Mel pipeline", "Mel chunking"), and
one 80 x 16 window of it per output video frame.

    16 kHz mono -> preemphasis 0.97 -> |STFT| (n_fft 800, hop 200, win 800, Hann, centred with
    reflect padding: librosa 0.7.0's defaults, the version Wav2Lip pins) -> librosa's Slaney mel
    bank (80 bands, 55-7600 Hz, area-normalised) -> 20 log10(max(1e-5, x)) - 20 dB -> the symmetric
    normalisation 8 (S + 100) / 100 - 4, clipped to [-4, 4].

The audio is decoded by the project's ffmpeg (engine.media.audio): any audio file, or the sound of
a video, resampled to 16 kHz there (Wav2Lip resamples with librosa; the resamplers differ slightly).
"""
from __future__ import annotations

import functools

import librosa
import numpy as np
from scipy import signal

from engine import UserFacingError
from engine.media.audio import read_audio

SAMPLE_RATE = 16000
N_FFT, HOP, WIN = 800, 200, 800
N_MELS, FMIN, FMAX = 80, 55, 7600
PREEMPHASIS = 0.97
MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS = -100, 20, 4.0
STEP = 16                 # mel_step_size: hops per window (0.2 s)
HOPS_PER_SECOND = SAMPLE_RATE / HOP   # 80: mel_idx_multiplier = 80 / fps
# Below this peak (-80 dBFS) the audio is taken as silence: there is nothing to move the lips to.
SILENCE = 1e-4
SHORTEST = (STEP - 1) * HOP   # samples that give 16 mel frames (T = 1 + len // 200): 0.19 s


@functools.lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """librosa's Slaney-style bank as Wav2Lip builds it (htk False, area-normalised)."""
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)


def melspectrogram(samples: np.ndarray) -> np.ndarray:
    """(80, 1 + len // 200) float32 in [-4, 4] of 16 kHz mono samples."""
    emphasised = signal.lfilter([1, -PREEMPHASIS], [1], samples)
    # librosa 0.7.0 (Wav2Lip's pin) padded by reflection and returned complex64; newer librosa pads
    # with zeros unless told.
    spectrum = np.abs(librosa.stft(y=emphasised, n_fft=N_FFT, hop_length=HOP, win_length=WIN,
                                   pad_mode="reflect", dtype=np.complex64))
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))   # 1e-5
    db = 20 * np.log10(np.maximum(min_level, mel_basis() @ spectrum)) - REF_LEVEL_DB
    normalised = (2 * MAX_ABS) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS
    return np.clip(normalised, -MAX_ABS, MAX_ABS).astype(np.float32)


def chunk_starts(frames_of_mel: int, fps: float) -> list[int]:
    """Where each output frame's 16-hop window starts: int(i * 80 / fps) while the window fits,
    then one last window taken from the end (Wav2Lip's loop). Their count is the video's length."""
    if frames_of_mel < STEP:
        raise UserFacingError(audio_too_short())
    starts, multiplier, i = [], HOPS_PER_SECOND / float(fps), 0
    while True:
        start = int(i * multiplier)
        if start + STEP > frames_of_mel:
            starts.append(frames_of_mel - STEP)
            return starts
        starts.append(start)
        i += 1


def chunk(mel: np.ndarray, start: int) -> np.ndarray:
    """The window fed as `source`: (1, 1, 80, 16) float32."""
    return np.ascontiguousarray(mel[:, start:start + STEP])[None, None]


def audio_too_short() -> str:
    return (f"The audio is too short: lips need at least {SHORTEST / SAMPLE_RATE:.2f} s of sound "
            "(Wav2Lip's 0.2 s window).")


def read_speech(path) -> np.ndarray:
    """16 kHz mono samples of the driving audio (any audio file, or the sound of a video); a plain
    error for a file that is not audio, has no sound track, is empty, too short or silent."""
    samples = read_audio(path, SAMPLE_RATE, mono=True)   # MediaError in plain words
    if samples.size < SHORTEST:
        raise UserFacingError(audio_too_short())
    if float(np.abs(samples).max()) < SILENCE:
        raise UserFacingError("The audio is silent: there is no sound to move the lips to.")
    return samples


def speech_windows(path, fps: float) -> tuple[np.ndarray, list[int]]:
    """(the mel of the driving audio, the start of each output frame's window at fps)."""
    mel = melspectrogram(read_speech(path))
    return mel, chunk_starts(mel.shape[1], fps)
