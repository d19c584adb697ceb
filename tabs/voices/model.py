"""Voice similarity and speaker turns with resemblyzer's speaker encoder (resemblyzer 0.1.4,
`pretrained.pt`: a 3-layer LSTM over 40-band mel frames, 256-number voice prints, 16 kHz).

- compare_voices: the cosine of two voice prints (resemblyzer's own recipe: volume normalised,
  long silences cut by webrtcvad, 1.6 s windows averaged).
- diarize, diarize_job (the diarize_long job): who speaks when, in diarize.py (re-exported
  here, where the package and the tab find them).

Requests are checked by the package's check() before they get here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import Call, ModelSpec, UserFacingError
from engine.package_files import package_folder, reason_if_missing

from .diarize import (CHUNK_GRID, DIARIZE_LONG, LONG_S, MAX_SPEAKERS, RATE, VOICE_ENCODER,  # noqa: F401
                      mono16k, diarize, diarize_job, one_thread)

MiB = 1024**2

# The equal-error point on real meeting speech (AMI, `python -m bench quality`: 46 clips of 2-4 s,
# 11 speakers, 143 same- / 892 different-speaker pairs): EER 7 % at 0.702 (0.69-0.70 over other
# clip cuts), rounded to 0.70. The 0.80 calibrated before on synthetic voices (same voice
# 0.87-0.95) called half of the real same-speaker pairs different.
SAME_SPEAKER = 0.70
SAME_SPEAKER_FRR, SAME_SPEAKER_FAR = 0.06, 0.08  # at SAME_SPEAKER on AMI (6.3 %, 7.5 %): what the tab says
MIN_SPEECH_S = 0.5  # less speech than this gives no usable voice print
COMPARE_S = 60.0  # compare_voices listens to the first minute of each file

_MISSING = ("resemblyzer is not installed: run ./setup.sh "
            "(it installs resemblyzer==0.1.4 --no-deps for pretrained.pt, plus webrtcvad-wheels and librosa)")


def weights_path() -> Path:
    return package_folder("resemblyzer", "", ["pretrained.pt"], _MISSING) / "pretrained.pt"


def unavailable_reason() -> str | None:
    reason = reason_if_missing(weights_path)
    if reason:
        return reason
    try:
        import webrtcvad  # noqa: F401  (resemblyzer's audio module imports it)
    except ImportError:
        return f"{_MISSING} (webrtcvad is missing)"
    return None


def load(device: str):
    """resemblyzer's VoiceEncoder on `device`. Its torch.load runs with torch's default
    weights_only=True (torch >= 2.6): the checkpoint holds only tensors and numbers."""
    from resemblyzer import VoiceEncoder

    encoder = VoiceEncoder(device=device, verbose=False, weights_fpath=weights_path())
    return encoder.eval()


def voice_print(encoder, wav16k: np.ndarray) -> np.ndarray:
    """resemblyzer's utterance embedding (unit length) of preprocessed speech."""
    with one_thread():
        return encoder.embed_utterance(wav16k)


def prepare(samples: np.ndarray, sr: int) -> np.ndarray:
    """resemblyzer's preprocessing (volume up to -30 dBFS, long silences cut); UserFacingError
    when less than MIN_SPEECH_S of speech is left."""
    from resemblyzer import preprocess_wav

    wav = mono16k(samples, sr)
    if wav.size < MIN_SPEECH_S * RATE or float(np.sqrt(np.mean(wav**2))) < 1e-4:
        raise UserFacingError("This recording holds no speech, or too little (under half a second).")
    wav = preprocess_wav(wav)
    if wav.size < MIN_SPEECH_S * RATE:
        raise UserFacingError("This recording holds too little speech (under half a second) to compare.")
    return wav


def compare_voices(call: Call, a: np.ndarray, b: np.ndarray, sr: int = RATE) -> dict:
    """{"similarity": cosine of the two voice prints (-1..1, in practice 0.3..1),
    "same_speaker": similarity >= SAME_SPEAKER} for two recordings of speech at `sr`."""
    wav_a, wav_b = prepare(a, sr), prepare(b, sr)
    prints = call(VOICE_ENCODER, lambda enc: (voice_print(enc, wav_a), voice_print(enc, wav_b)))
    score = similarity(*prints)
    return {"similarity": round(score, 4), "same_speaker": score >= SAME_SPEAKER}


def similarity(print_a: np.ndarray, print_b: np.ndarray) -> float:
    """compare_voices' score of two voice prints (bench/quality.py scores all pairs with it)."""
    return float(np.clip(np.dot(print_a, print_b), -1.0, 1.0))


def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=VOICE_ENCODER, role="interactive", runtime="torch", loader=load,
            source="resemblyzer 0.1.4 wheel: pretrained.pt (speaker encoder LSTM, Apache-2.0)",
            # 1.4 M parameters (5.6 MiB); a run holds mel windows and LSTM activations: ~64 windows
            # of 160 frames at a time.
            estimate_bytes=8 * MiB, run_estimate_bytes=64 * MiB,
            function="speaker embedding (voices, diarization)",
            description="resemblyzer speaker encoder: voice prints, voice similarity, speaker turns"),
    ]
