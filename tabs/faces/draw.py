"""Faces drawn on a photo: box, score and the five landmarks, as the Detect tab shows them."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from analysers.face_detector import as_rgb


def draw_faces(image: np.ndarray, faces: list[dict]) -> np.ndarray:
    """RGB copy of `image` with each face's box, landmarks and score drawn on it."""
    canvas = Image.fromarray(as_rgb(image).copy())
    draw = ImageDraw.Draw(canvas)
    # Scale strokes with the image so they stay visible on big photos and thin on small ones.
    line = max(1, round(min(canvas.size) / 200))
    dot = line + 1
    font = ImageFont.load_default(size=max(10, 6 * line))
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        draw.rectangle([x1, y1, x2, y2], outline=(0, 255, 0), width=line)
        for x, y in face["landmarks"]:
            draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=(255, 0, 0))
        label = f"{face['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left, bottom - top
        # Put the label above the box, or inside it when the box touches the top edge.
        ty = y1 - th - 2 * line if y1 - th - 2 * line >= 0 else y1 + line
        draw.rectangle([x1, ty, x1 + tw + 2 * line, ty + th + 2 * line], fill=(0, 255, 0))
        draw.text((x1 + line - left, ty + line - top), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
