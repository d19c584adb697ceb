"""Hide faces: blur or pixelate each detected face box (with a margin) in an RGB image."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

MODES = ("blur", "pixelate")
_MARGIN = 0.15  # of the box size: the detector's box is tight, hair and ears would show


def _region(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * _MARGIN, (y2 - y1) * _MARGIN
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(width, int(np.ceil(x2 + mx))), min(height, int(np.ceil(y2 + my)))
    return (left, top, right, bottom) if right > left and bottom > top else None


def hide_faces(image: np.ndarray, faces: list[dict], mode: str = "blur") -> np.ndarray:
    """A copy of `image` with every face in `faces` (dicts with 'box') blurred or pixelated."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    out = Image.fromarray(image)
    for face in faces:
        region = _region(face["box"], out.width, out.height)
        if region is None:
            continue
        patch = out.crop(region)
        size = max(patch.width, patch.height)
        if mode == "blur":
            # Radius scales with the face so a large face is as unreadable as a small one.
            patch = patch.filter(ImageFilter.GaussianBlur(radius=max(2.0, size / 8)))
        else:
            blocks = max(1, size // 10)  # about ten blocks across the face
            small = patch.resize((max(1, patch.width // blocks), max(1, patch.height // blocks)), Image.BOX)
            patch = small.resize(patch.size, Image.NEAREST)
        out.paste(patch, region[:2])
    return np.asarray(out)
