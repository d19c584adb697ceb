"""Pay first-use costs at set-up, not in the first user's request: librosa's numba compilation
(cached in site-packages), the shared face analysers' ONNX exports and each capability's own
(`prepare()` in its contract, where it has one: converted weights, exports, all cached by weights
hash and versions). `python -m tabs.warmup` (setup.sh runs it; launch.py repeats the librosa part
at start-up, which takes a second once the cache is warm)."""
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


def export_face_embedder() -> float:
    from analysers import face_identity

    return face_identity.export_onnx()


def export_face_emotion() -> float:
    from analysers import face_emotion

    return face_emotion.export_onnx() if face_emotion.unavailable_reason() is None else 0.0


def prepare_capabilities() -> dict[str, float]:
    """Seconds each capability's prepare() took; a capability that cannot run here is skipped."""
    from tabs import CAPABILITIES, capability

    took = {}
    for name in CAPABILITIES:
        cap = capability(name)
        if hasattr(cap, "prepare") and cap.unavailable() is None:
            started = time.perf_counter()
            cap.prepare()
            took[name] = time.perf_counter() - started
    return took


if __name__ == "__main__":
    print(f"librosa warmed up in {warm_up():.1f} s")
    print(f"face detector exported to ONNX (or found in the cache) in {export_face_detector():.1f} s")
    print(f"face embedder exported to ONNX (or found in the cache) in {export_face_embedder():.1f} s")
    print(f"face emotion network exported to ONNX (or found in the cache) in {export_face_emotion():.1f} s")
    for name, seconds in prepare_capabilities().items():
        print(f"{name}: prepared (converted, exported, or found in the cache) in {seconds:.1f} s")
