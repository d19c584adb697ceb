"""Pay first-use costs at set-up, not in the first user's request: librosa's numba compilation
(cached in site-packages) and the face detector's ONNX export (cached by weights hash and versions).
`python -m analysers.warmup` (setup.sh runs it; launch.py repeats the librosa part at start-up, which
takes a second once the cache is warm)."""
from __future__ import annotations

import time

import numpy as np


def warm_up() -> float:
    started = time.perf_counter()
    try:
        import librosa
    except ImportError:
        return 0.0
    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    # What the audio models call: resampling (denoise, voices) and mel spectrograms (resemblyzer).
    librosa.resample(noise, orig_sr=16000, target_sr=48000, res_type="soxr_hq")
    librosa.feature.melspectrogram(y=noise, sr=16000, n_fft=400, hop_length=160, n_mels=40)
    librosa.effects.trim(noise)
    librosa.util.localmax(noise)
    return time.perf_counter() - started


def export_face_detector() -> float:
    started = time.perf_counter()
    from analysers.face_detector import load_mtcnn

    load_mtcnn("cpu", accelerate="onnx")
    return time.perf_counter() - started


if __name__ == "__main__":
    print(f"librosa warmed up in {warm_up():.1f} s")
    print(f"face detector exported to ONNX (or found in the cache) in {export_face_detector():.1f} s")
