"""Images in: whatever file a user uploads is decoded here, with a pixel cap, in any colour mode,
into 8-bit L, RGB or RGBA, or refused with a message that says why in plain words.

Left to itself, PIL (and Gradio, which only calls PIL) trusts the file: a PNG declaring 144
megapixels of zeros, 144 KiB on disk, is decoded in full (PIL only warns below 179 MP); a
16-bit PNG comes out white when clipped to 8 bits; a broken file fails with PIL's own words and
a server path. Every image input goes through `open_image` instead: the app's image inputs
(ui/gradio_patches.py) and the pictures a job reads back from its folder.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserFacingError

MAX_PIXELS = 100_000_000   # 100 megapixels: any camera's photo; 300 MB once RGB
# PIL's own check stays on as a second line: it refuses at open from twice this.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# What a broken file raises somewhere inside PIL's decoders.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                  struct.error, zlib.error)


class ImageError(UserFacingError):
    """An uploaded image that cannot be used; the message says why, for the user."""


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float gray as 8-bit gray, scaled (not clipped: 16-bit is not white)."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = values.astype(np.float32) / 257.0
    elif image.mode == "F":
        finite = np.nan_to_num(values.astype(np.float32))
        scaled = finite * 255.0 if finite.size and finite.max() <= 1.0 else finite
    else:  # "I": 32-bit integers, usually 16-bit data
        top = float(values.max()) if values.size else 0.0
        scaled = values.astype(np.float32) / (257.0 if top > 255 else 1.0)
        if top > 65535:
            scaled = values.astype(np.float32) * (255.0 / top)
    return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), "L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def open_image(source, what: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A decoded, upright image in mode L, RGB or RGBA (RGBA when the file has transparency).

    source: a path or the file's bytes. Raises ImageError when the file is empty, not an image,
    truncated or corrupt, over `max_pixels`, or in a colour mode that cannot be shown.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError(f"The {what} is empty (0 bytes).")
        stream = io.BytesIO(source)
    else:
        try:
            if os.path.getsize(source) == 0:
                raise ImageError(f"The {what} is empty (0 bytes).")
        except OSError as exc:
            raise ImageError(f"The {what} did not arrive; upload it again.") from exc
        stream = source
    limit = f"{max_pixels / 1e6:g} megapixels"
    try:
        with warnings.catch_warnings():
            # Below PIL's error, its bomb warning is ours to act on: the size check just after.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as exc:   # over twice PIL's cap: PIL refuses to open it
        over = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise ImageError(f"The {what} is too large: over {over:g} megapixels, the limit is {limit}.") from exc
    except (UnidentifiedImageError, *_DECODE_ERRORS) as exc:
        raise ImageError(f"The {what} could not be read: the file is not a picture, or its format "
                         "is not supported.") from exc
    width, height = image.size
    try:
        if width * height == 0:
            raise ImageError(f"The {what} is empty ({width}x{height} pixels).")
        if width * height > max_pixels:
            raise ImageError(f"The {what} is too large: {width}x{height} is {width * height / 1e6:.0f} "
                             f"megapixels, the limit is {limit}.")
        image.load()
    except MemoryError as exc:
        image.close()
        raise ImageError(f"The {what} is too large to decode in the memory there is.") from exc
    except _DECODE_ERRORS as exc:
        image.close()
        raise ImageError(f"The {what} could not be read: the file is truncated or corrupt.") from exc
    except ImageError:
        image.close()   # refused before decoding: let go of the file now
        raise
    try:
        image = ImageOps.exif_transpose(image)   # phone photos: upright as shot
    except Exception:  # a broken EXIF block leaves the picture as stored, as a viewer would show it
        pass
    stored = image.mode
    if stored in _WIDE_MODES:
        image = _to_8bit(image)
    elif stored not in ("L", "RGB", "RGBA"):
        try:
            image = image.convert("RGBA" if _has_alpha(image) else "RGB")
        except (ValueError, OSError) as exc:
            raise ImageError(f"The {what} uses a colour mode ({stored}) that is not supported; "
                             "save it as RGB and try again.") from exc
    image.info["source_mode"] = stored   # the file's own mode: a caller may pass the file on as it is
    return image


def convert(image: Image.Image, mode: str | None, flatten: bool = True) -> Image.Image:
    """An image from open_image in `mode` (None keeps it). With `flatten`, "RGB" puts transparent
    parts on white, as a photo on paper; any other conversion is PIL's (a gray mask's alpha is
    ignored, as Gradio does, so a transparent background stays black, "keep")."""
    if mode is None or image.mode == mode:
        return image
    if mode == "RGB" and flatten and _has_alpha(image):
        flat = Image.new("RGBA", image.size, "white")
        flat.alpha_composite(image.convert("RGBA"))
        return flat.convert(mode)
    return image.convert(mode)


def read_image(source, what: str = "image", mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 array of an image file: (H, W, 3) for "RGB", (H, W, 4) for "RGBA", (H, W) for "L".
    ImageError (a UserFacingError) when the file cannot be used; see open_image."""
    return np.array(convert(open_image(source, what, max_pixels), mode))


def describe(exc: ImageError, label: str | None) -> str:
    """The message with the input's label first, so the user knows which picture it was."""
    text = str(exc)
    if not label or label.strip().lower() in ("image", "picture", "photo"):
        return _capital(text)
    return f"{label}: {text[:1].lower()}{text[1:]}"


def rgb_array(image, min_side: int = 1, what: str = "photo") -> np.ndarray:
    """An in-memory picture (gray, RGB or RGBA uint8 array, as Gradio hands them over) as a
    contiguous (H, W, 3) uint8 array; an ImageError in plain words when it cannot be one."""
    if image is None:
        raise ImageError(f"Upload a {what} first.")
    image = np.asarray(image)
    if image.size == 0 or image.ndim < 2 or 0 in image.shape[:2]:
        raise ImageError(f"The {what} is empty.")
    if image.dtype != np.uint8:
        raise ImageError(f"The {what} must have 8-bit colours (uint8), not {image.dtype}.")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(f"The {what} must be a gray, RGB or RGBA picture, not an array of shape {image.shape}.")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if min(image.shape[:2]) < min_side:
        raise ImageError(f"The {what} is too small ({image.shape[1]}x{image.shape[0]}); both sides need "
                         f"at least {min_side} px.")
    return np.ascontiguousarray(image[..., :3])
