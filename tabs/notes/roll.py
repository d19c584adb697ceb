"""The piano-roll picture of transcribed notes: time across, pitch up, a bar per note shaded by
its velocity, a line and a name at every C. Drawn with Pillow (matplotlib is not installed)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .model import note_name

WIDTH, MARGIN, ROW_MIN, ROW_MAX, HEIGHT_MAX = 1000, 40, 4, 16, 600
BACKGROUND, GRID, LABEL = (250, 250, 250), (205, 205, 205), (90, 90, 90)


def piano_roll(notes: list[dict], duration_s: float) -> np.ndarray:
    """An RGB picture (uint8, h x w x 3) of the notes; an empty roll when there are none."""
    pitches = [n["pitch"] for n in notes] or [60, 72]
    low, high = min(pitches) - 2, max(pitches) + 2   # a little room above and below
    rows = high - low + 1
    row = int(np.clip(HEIGHT_MAX // rows, ROW_MIN, ROW_MAX))
    height = rows * row + 20
    seconds = max(duration_s, max((n["end"] for n in notes), default=0.0), 1e-3)
    scale = (WIDTH - MARGIN - 10) / seconds
    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    def y_of(pitch: int) -> int:   # the top of the pitch's row
        return (high - pitch) * row

    for pitch in range(low, high + 1):
        if pitch % 12 == 0:   # every C
            draw.line([(MARGIN, y_of(pitch) + row), (WIDTH, y_of(pitch) + row)], fill=GRID)
            draw.text((2, y_of(pitch) + row - 11), note_name(pitch), fill=LABEL)
    step = 10 ** np.floor(np.log10(seconds)) if seconds >= 1 else 0.1   # a time mark every 1, 10, ... s
    if seconds / step < 4:
        step /= 2
    for i in range(int(seconds / step) + 1):
        x = MARGIN + i * step * scale
        draw.line([(x, 0), (x, rows * row)], fill=GRID)
        draw.text((x + 2, rows * row + 4), f"{i * step:g} s", fill=LABEL)
    for note in notes:
        shade = int(200 - 160 * note["velocity"] / 127)   # louder is darker
        x0, x1 = MARGIN + note["start"] * scale, MARGIN + note["end"] * scale
        draw.rectangle([x0, y_of(note["pitch"]) + 1, max(x1 - 1, x0 + 1), y_of(note["pitch"]) + row - 1],
                       fill=(shade // 3, shade // 2 + 40, min(255, shade + 55)))
    return np.asarray(image)
