"""Where interactive results are kept: data/outputs/<mode>/<date>/<time>-<index>-<seed>.png."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from PIL import Image

from .png_info import save_png


def output_folder(data_dir: str | os.PathLike, mode: str) -> Path:
    return Path(data_dir) / "outputs" / mode / dt.date.today().isoformat()


def image_name(index: int, seed: int) -> str:
    return f"{dt.datetime.now().strftime('%H%M%S')}-{index:04d}-{seed}.png"


def save_outputs(data_dir: str | os.PathLike, mode: str, images: list[Image.Image]) -> Path:
    """Every image of a call as a PNG with its parameters; the folder they are in."""
    folder = output_folder(data_dir, mode)
    for i, img in enumerate(images):
        save_png(img, folder / image_name(i, int(img.info["seed"])))
    return folder
