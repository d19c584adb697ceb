"""Write tests/data/upscale_ncnn_*.png: what ncnn itself made of real photos with the
Real-ESRGAN weights we ship, so the tests can hold our own runtime (torch / ONNX Runtime) to it
without ncnn installed.

Run once, from the repository root, where the `ncnn` PyPI package is installed (the app no longer
needs it: `pip install ncnn==1.0.20261020` into a scratch venv or this one):

    .venv/bin/python tests/data/make_upscale_reference.py

Made with ncnn 1.0.20261020 on x86 CPU (float32 arithmetic on the fp16-stored weights), realesrgan-
ncnn-py 2.0.0's realesr-animevideov3-x2/x4 and realesrgan-x4plus .param/.bin.

The files (lossless RGB PNGs; a net's 0..1 output rounded to uint8 as the app rounds it), named
upscale_ncnn_<name>.png:
- `photo`: a 64x64 crop of skimage's astronaut (her face and hair);
  `fast_x2`, `fast_x4`, `x4plus_x4`: each net run on it whole (128x128, 256x256, 256x256).
- `tiled_input`: an 80x96 crop of skimage's coffee; `tiled_fast_x2`: the x2 net run over it in
  tiles of 48 px with a 16 px edge-replicated margin (model.upscale_tiles' scheme, written out
  here so it is ncnn's result and not ours).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
FOLDER = Path(__file__).resolve().parent
NETS = {"fast_x2": "realesr-animevideov3-x2", "fast_x4": "realesr-animevideov3-x4",
        "x4plus_x4": "realesrgan-x4plus"}
TILE, MARGIN = 48, 16


def photo() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[100:164, 180:244])


def tiled_input() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.coffee()[40:120, 200:296])


def as_uint8(chw: np.ndarray) -> np.ndarray:
    return np.clip(chw.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def load(folder: Path, stem: str):
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    if net.load_param(str(folder / f"{stem}.param")) != 0 or net.load_model(str(folder / f"{stem}.bin")) != 0:
        raise RuntimeError(f"ncnn could not read {stem}.param/.bin in {folder}")
    return net


def run(net, patch: np.ndarray) -> np.ndarray:
    """uint8 RGB [h, w, 3] -> float32 [3, h*s, w*s]: input blob "data" in 0..1, output blob "output"."""
    import ncnn

    height, width = patch.shape[:2]
    mat = ncnn.Mat.from_pixels(np.ascontiguousarray(patch), ncnn.Mat.PixelType.PIXEL_RGB, width, height)
    mat.substract_mean_normalize([], [1 / 255.0] * 3)
    extractor = net.create_extractor()
    extractor.input("data", mat)
    ret, out = extractor.extract("output")
    if ret != 0:
        raise RuntimeError(f"ncnn failed (code {ret})")
    return np.array(out)


def tiled(net, image: np.ndarray, scale: int) -> np.ndarray:
    height, width = image.shape[:2]
    padded = np.pad(image, ((MARGIN, MARGIN), (MARGIN, MARGIN), (0, 0)), mode="edge")
    out = np.empty((height * scale, width * scale, 3), np.uint8)
    m = MARGIN * scale
    for y0 in range(0, height, TILE):
        y1 = min(y0 + TILE, height)
        for x0 in range(0, width, TILE):
            x1 = min(x0 + TILE, width)
            result = run(net, padded[y0:y1 + 2 * MARGIN, x0:x1 + 2 * MARGIN])
            out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                as_uint8(result[:, m:m + (y1 - y0) * scale, m:m + (x1 - x0) * scale])
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import ncnn

    from tabs.upscale.model import weights_dir

    folder = weights_dir()
    arrays = {"photo": photo(), "tiled_input": tiled_input()}
    for name, stem in NETS.items():
        net = load(folder, stem)
        arrays[name] = as_uint8(run(net, arrays["photo"]))
        if name == "fast_x2":
            arrays["tiled_fast_x2"] = tiled(net, arrays["tiled_input"], 2)
        net.clear()
    for name, array in arrays.items():
        path = path_of(name)
        Image.fromarray(array).save(path, optimize=True)
        print(f"{path.name}: {array.shape}, {path.stat().st_size // 1024} KB")
    print(f"made with ncnn {ncnn.__version__}")


def path_of(name: str) -> Path:
    return FOLDER / f"upscale_ncnn_{name}.png"


def read(name: str) -> np.ndarray:
    """One reference array (the tests read them through this)."""
    return np.asarray(Image.open(path_of(name)).convert("RGB"))


if __name__ == "__main__":
    main()
