"""Music tags with musicnn (Pons & Serra 2019; musicnn 0.1.0 wheel, ISC): the MSD_musicnn
checkpoint, read by checkpoint.py and rebuilt in torch by network.py, exported to ONNX.

Chosen by measurement among the wheel's four checkpoints (two networks, each trained on
MagnaTagATune and on the Million Song Dataset): MSD_musicnn names genres (jazz, rock,
electronic, Hip-Hop...), tags gradio's sax.wav jazz at 0.54 and tells speech from music, where
MSD_vgg also calls speech jazz, and the MTT vocabulary has no jazz at all (sax -> "classical").
Its published test ROC-AUC 0.880 (MSD_vgg 0.877). The reading and the rebuild are held to
musicnn's published output: the same network with the wheel's MTT weights gives the README's
top 10 tags for its example clip, in order (tests/test_tags.py).

A piece is cut as the wheel's extractor cuts it: 187-frame (3 s) patches without overlap, a last
partial patch dropped, the piece's tags the mean over patches (tagger.top_tags). A piece shorter
than one patch is repeat-padded, as the model was trained ("pad_short": "repeat-pad"). Audio
streams in 30 s chunks (one chunk and under a patch of frames in memory); the frames are those of
one librosa pass over the whole file (its centred, reflect-padded STFT).
"""
from __future__ import annotations

import ast
import contextlib
import functools
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from engine import Call, JobContext, ModelSpec, UserFacingError
from engine.files import write_json
from engine.media.audio import probe_audio, stream_audio
from engine.package_files import package_folder, reason_if_missing
from engine.predict import seconds_bucket as seconds_key
from engine.runtimes import onnx_runtime

from . import network as nw

MiB = 1024**2
TAGS_MODEL = "musicnn-msd"
TAGS_LONG = "tag_music_long"
CHECKPOINT = "MSD_musicnn"
INTERACTIVE_MAX_S = 300.0  # 3-10 s of work on 2 busy cores; longer pieces run as a job
MIN_SECONDS = 1.0
CHUNK_S = 30.0
# Patches per network call. On a CPU one: measured on 2 cores, ONNX Runtime takes 24 ms a patch
# one at a time and 19.5 ms in batches of 8, whose activations peak at +385 MiB against +80 MiB
# (eager torch: 43 ms one at a time, 150 ms a patch in 8s). On a GPU, 8 (not measured here).
BATCH_GPU = 8
TOP = 10
PATCH_S = nw.PATCH_FRAMES * nw.HOP / nw.SAMPLE_RATE  # 2.992 s
# The ONNX file's name in the compile cache: bump it when Musicnn.forward changes.
EXPORT_KEY = "musicnn-msd-v1"
_MISSING = ("musicnn is not installed: run ./setup.sh (it installs musicnn==0.1.0 --no-deps, "
            "whose wheel holds the MSD_musicnn TensorFlow checkpoint)")
_FILES = [".index", ".data-00000-of-00001"]


def checkpoint_prefix(name: str = CHECKPOINT) -> str:
    """The path before '.index' (the wheel saved each checkpoint as '<folder>/')."""
    return str(package_folder("musicnn", name, _FILES, _MISSING)) + os.sep


@functools.lru_cache(maxsize=None)
def labels(dataset: str = "MSD") -> tuple[str, ...]:
    """The tag names in output order, from the wheel's configuration.py (read, not imported)."""
    path = package_folder("musicnn", "", ["configuration.py"], _MISSING) / "configuration.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == f"{dataset}_LABELS":
            return tuple(ast.literal_eval(node.value))
    raise FileNotFoundError(f"{_MISSING} (no {dataset}_LABELS in {path})")


def unavailable_reason() -> str | None:
    return reason_if_missing(lambda: (checkpoint_prefix(), labels()))


def seconds_bucket(seconds: float) -> str:
    """Input size in seconds ('s:12.5'): memory follows the 30 s chunk, not the file, so the
    length counts up to one chunk."""
    return seconds_key(min(seconds, CHUNK_S))


# ---------------------------------------------------------------------------------- model

class TagNet:
    """The network on a device: [n, 187, 96] log-mel patches -> [n, 50] probabilities."""

    def __init__(self, net, device: str):
        self.net, self.device = net, device

    @property
    def runtime(self) -> str:
        """"onnxruntime", or "torch" (eager: asked for, or after a failed export)."""
        return "onnxruntime" if getattr(self.net, "mode", "eager") == "onnx" else "torch"

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        import torch

        step = 1 if self.device == "cpu" else BATCH_GPU
        out = []
        with torch.inference_mode():
            for i in range(0, len(patches), step):
                batch = torch.from_numpy(np.ascontiguousarray(patches[i:i + step], np.float32))
                out.append(self.net(batch.to(self.device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(labels())), np.float32)


def build(name: str = CHECKPOINT):
    """The torch module of a wheel checkpoint ('MSD_musicnn', 'MTT_musicnn'), eval mode, on the CPU."""
    from .checkpoint import read_checkpoint

    tensors = read_checkpoint(checkpoint_prefix(name))
    return nw.Musicnn(tensors).eval()


def load(device: str = "cpu", accelerate: str | None = "onnx", cache_dir: str | os.PathLike | None = None) -> TagNet:
    """MSD_musicnn on `device` ('cpu' or 'cuda:N'), exported to ONNX and run by ONNX Runtime there
    (the file cached by weights hash and versions), or eager torch (accelerate None / "eager", or
    when the export fails: engine.runtimes.compiled logs why)."""
    import torch

    net = build().to(device)
    if accelerate not in (None, "eager"):
        from engine.runtimes.compiled import accelerate as compiled

        # Log-mel values lie in [0, ~5]; a batch of 2 keeps the batch axis free in the export.
        gen = torch.Generator().manual_seed(0)
        example = 4 * torch.rand((2, nw.PATCH_FRAMES, nw.N_MELS), generator=gen).to(device)
        # ONNX Runtime's arena stays on: measured without it, runs peak ~250 MiB above the loaded
        # model (freed blocks the allocator does not give back) against ~50 MiB, and run slower.
        net = compiled(net, (example,), accelerate, cache_dir, EXPORT_KEY)
    return TagNet(net, device)


def prepare(cache_dir: str | os.PathLike | None = None) -> dict:
    """Pay the ONNX export (8-17 s on 2 cores) at set-up, not in a first request."""
    return load("cpu", "onnx", cache_dir).net.info.as_dict()


# ---------------------------------------------------------------------------------- framing

class Patcher:
    """16 kHz samples in chunks of any size -> 187-frame log-mel patches, the frames one librosa
    pass over the whole piece gives (centred frames: the piece reflect-padded by 256 at both ends)."""

    def __init__(self):
        self.samples = 0
        self._buffer = np.zeros(0, np.float32)  # padded samples not yet framed
        self._tail = np.zeros(0, np.float32)    # the last 257 samples: the end's reflect padding
        self._started = False
        self._frames: list[np.ndarray] = []     # frames not yet in a patch
        self.patches = 0

    def feed(self, chunk: np.ndarray) -> np.ndarray:
        """The patches completed by `chunk`: [n, 187, 96]."""
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        self.samples += chunk.size
        self._tail = np.concatenate([self._tail, chunk])[-(nw.N_FFT // 2 + 1):]
        self._buffer = np.concatenate([self._buffer, chunk])
        if not self._started:
            if self._buffer.size <= nw.N_FFT // 2:
                return self._empty()
            self._buffer = np.concatenate([self._buffer[1:nw.N_FFT // 2 + 1][::-1], self._buffer])
            self._started = True
        return self._frame()

    def finish(self) -> tuple[np.ndarray, bool]:
        """The last patches, and whether the piece was shorter than a patch and repeat-padded."""
        if not self._started:
            if self._buffer.size <= nw.N_FFT // 2:
                raise UserFacingError(f"The audio is too short to tag: give at least {MIN_SECONDS:g} s of music.")
            self._buffer = np.concatenate([self._buffer[1:nw.N_FFT // 2 + 1][::-1], self._buffer])
            self._started = True
        self._buffer = np.concatenate([self._buffer, self._tail[:-1][::-1]])
        patches = self._frame()
        if self.patches == 0 and self._frames:  # shorter than 3 s: repeat the frames it has
            frames = np.concatenate(self._frames)
            repeated = np.tile(frames, (math.ceil(nw.PATCH_FRAMES / len(frames)), 1))[:nw.PATCH_FRAMES]
            self._frames, self.patches = [], 1
            return repeated[None], True
        self._frames = []  # a last partial patch is dropped, as the extractor drops it
        return patches, False

    def _frame(self) -> np.ndarray:
        count = 1 + (self._buffer.size - nw.N_FFT) // nw.HOP
        if count > 0:
            self._frames.append(nw.log_mel(nw.frames_power(self._buffer[:(count - 1) * nw.HOP + nw.N_FFT])))
            self._buffer = self._buffer[count * nw.HOP:]
        frames = np.concatenate(self._frames) if self._frames else np.zeros((0, nw.N_MELS), np.float32)
        whole = len(frames) // nw.PATCH_FRAMES
        self._frames = [frames[whole * nw.PATCH_FRAMES:]]
        self.patches += whole
        return frames[:whole * nw.PATCH_FRAMES].reshape(whole, nw.PATCH_FRAMES, nw.N_MELS)

    @staticmethod
    def _empty() -> np.ndarray:
        return np.zeros((0, nw.PATCH_FRAMES, nw.N_MELS), np.float32)


# ---------------------------------------------------------------------------------- tagging

def summarize(scores: np.ndarray, duration_s: float, padded: bool, top: int = TOP) -> dict:
    """The JSON answer from the taggram [patches, 50]."""
    names = labels()
    mean = scores.mean(axis=0) if len(scores) else np.zeros(len(names))
    order = np.argsort(-mean, kind="stable")[:top]
    return {
        "tags": [{"tag": names[i], "score": round(float(mean[i]), 4)} for i in order],
        "duration_s": round(duration_s, 3),
        "patch_s": round(PATCH_S, 3),
        "repeat_padded": padded,
        "labels": list(names),
        "taggram": [{"start": round(i * PATCH_S, 3), "end": round(duration_s if padded else (i + 1) * PATCH_S, 3),
                     "scores": [round(float(s), 4) for s in row]} for i, row in enumerate(scores)],
    }


def tag_stream(call: Call, chunks, top: int = TOP, on_chunk: Callable[[float], None] | None = None) -> dict:
    """Tags of a piece given as 16 kHz mono chunks; one lease per chunk's patches.

    Returns {"tags": [{"tag", "score"}] (the `top` best, by the mean over patches), "duration_s",
    "patch_s", "repeat_padded", "labels" (the 50 tag names), "taggram": [{"start", "end",
    "scores": [50 floats]}] (one per 3 s patch)}.
    """
    patcher, rows = Patcher(), []
    for chunk in chunks:
        patches = patcher.feed(chunk)
        if len(patches):
            rows.append(call(TAGS_MODEL, lambda net: net(patches)))
        if on_chunk:
            on_chunk(patcher.samples / nw.SAMPLE_RATE)
    duration = patcher.samples / nw.SAMPLE_RATE
    if patcher.samples == 0:
        raise UserFacingError("The audio could not be read: it is empty, or corrupt.")
    if duration < MIN_SECONDS:
        raise UserFacingError(f"The audio is {duration:.2f} s long: give at least {MIN_SECONDS:g} s of music to tag.")
    patches, padded = patcher.finish()
    if len(patches):
        rows.append(call(TAGS_MODEL, lambda net: net(patches)))
    return summarize(np.concatenate(rows), duration, padded, top)


def tag_samples(call: Call, samples: np.ndarray, top: int = TOP) -> dict:
    """tag_stream() of 16 kHz mono samples held in memory."""
    samples = np.asarray(samples, np.float32).reshape(-1)
    step = int(CHUNK_S * nw.SAMPLE_RATE)
    return tag_stream(call, (samples[i:i + step] for i in range(0, max(samples.size, 1), step)), top)


def tag_file(call: Call, path, top: int = TOP, on_chunk: Callable[[float], None] | None = None) -> dict:
    """tag_stream() of an audio file or a video's sound, decoded at 16 kHz by ffmpeg in 30 s chunks."""
    with contextlib.closing(stream_audio(path, nw.SAMPLE_RATE, CHUNK_S)) as pieces:
        return tag_stream(call, (chunk for _, chunk in pieces), top, on_chunk)


def tag_job(ctx: JobContext) -> str:
    """Job kind tag_music_long: param top; input 'audio'. Writes tags.json (what tag_file returns).
    A killed job starts again (about 1 s of work per 5 min of audio on 2 cores)."""
    source = ctx.input("audio")
    total = probe_audio(source).duration_s or 0.0

    def on_chunk(done: float) -> None:
        ctx.check_cancelled()
        ctx.progress(0.99 * min(done / max(total, 1.0), 1.0), f"tags: {done / 60:.1f} of {total / 60:.1f} min")

    result = tag_file(ctx.call, source, int(ctx.params.get("top", TOP)), on_chunk)
    out = Path(ctx.work_dir) / "tags.json"
    write_json(out, result)
    return str(out)


# ---------------------------------------------------------------------------------- catalog

def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=TAGS_MODEL, role="interactive", runtime="onnxruntime",
            loader=functools.partial(load, accelerate="onnx"),
            device=onnx_runtime.spec_device(),
            source="musicnn 0.1.0 wheel: MSD_musicnn/ TF1 checkpoint (ISC), read into torch, exported to ONNX",
            # Measured on CPU (ONNX file cached): a load adds 120-130 MiB RSS (3.1 MB of weights held
            # twice, the session, and its arena sized by the export check's 2-patch batch); a piece
            # of any length (30 s chunks, one patch a call) peaks 40-55 MiB above that.
            estimate_bytes=128 * MiB, run_estimate_bytes=64 * MiB,
            function="music tagging (genre, era, mood)", networks=1,
            description="musicnn (MSD): 3 s log-mel patches -> 50 tags (genres, eras, moods, vocals)"),
    ]
