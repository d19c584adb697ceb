"""Pictures in and out of the pipeline: inputs as RGB images and masks, the output size, and the
inpaint paste that keeps the picture as it was outside the mask."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .request import MAX_SIDE, DiffusionInputError, Request


def to_rgb(image) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as img:
            return img.convert("RGB")
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = np.clip(array * (255 if array.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        if array.ndim == 2:
            return Image.fromarray(array).convert("RGB")
        return Image.fromarray(array[..., :3]).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise DiffusionInputError(f"Not an image: {type(image).__name__}")


def to_mask(mask) -> Image.Image:
    """White (or True) = repaint. Accepts a path, a PIL image, a bool/uint8/float array; an RGBA
    image (a drawn layer) uses its alpha where its colour is empty."""
    if isinstance(mask, (str, os.PathLike)):
        with Image.open(mask) as img:
            mask = img.copy()
    if isinstance(mask, Image.Image):
        if mask.mode in ("RGBA", "LA") and not np.asarray(mask.convert("L")).any():
            mask = mask.getchannel("A")
        mask = np.asarray(mask.convert("L"))
    array = np.asarray(mask)
    if array.ndim == 3:
        array = array[..., 3] if array.shape[2] == 4 and not array[..., :3].any() else array[..., :3].max(axis=2)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8) if array.max() <= 1.0 else array.astype(np.uint8)
    return Image.fromarray(np.where(array >= 128, 255, 0).astype(np.uint8), "L")


def _round8(value: float) -> int:
    return max(64, min(MAX_SIDE, int(round(value / 8)) * 8))


def output_size(request: Request, image, native: int) -> tuple[int, int]:
    """(width, height), multiples of 8: the request's, else the input picture's (at most MAX_SIDE),
    else the model's native side."""
    if request.width and request.height:
        return _round8(request.width), _round8(request.height)
    if image is not None:
        w, h = to_rgb(image).size
        scale = min(1.0, MAX_SIDE / max(w, h))
        return _round8(w * scale), _round8(h * scale)
    return _round8(request.width or native), _round8(request.height or native)


def feather_px(width: int, height: int) -> int:
    return max(1, round(min(width, height) / 128))


def paste_outside_mask(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated picture inside the mask, the original outside it, blended over a few pixels
    just outside the mask's edge. Pixels farther than the feather from the mask are the original's."""
    from PIL import ImageFilter

    radius = feather_px(*generated.size)
    hard = np.asarray(mask.convert("L"), np.float32) / 255.0
    grown = np.asarray(mask.convert("L").filter(ImageFilter.MaxFilter(2 * radius + 1))
                       .filter(ImageFilter.BoxBlur(radius)), np.float32) / 255.0
    alpha = np.maximum(hard, np.minimum(grown, 1.0))[..., None]
    out = np.asarray(original.convert("RGB"), np.float32) * (1 - alpha) + np.asarray(generated, np.float32) * alpha
    result = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    result.info.update(generated.info)
    return result
