"""Segment: click on a picture (or draw a box with two clicks) and get the object's mask with SAM,
ready to download and use as the inpaint mask in the Generate tab.

Its models are the ones users add: the model store registers kind "sam" (a folder whose
config.json says model_type "sam", as the hub or save_pretrained lay it out) and calls
store_added / store_removed, which make each one an engine model."""
from __future__ import annotations

import json
from pathlib import Path

TITLE = "Segment"
GROUP = "Images"  # shown as a sub-tab of Images

STORE_KIND = "sam"
STORE_WANTS = "a SAM model (its config.json has no model_type 'sam')"


def specs() -> list:
    return []


def job_kinds() -> list:
    return []


def unavailable() -> str | None:
    try:
        import transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed: run ./setup.sh."
    return None


def check(params: dict, inputs: dict) -> None:
    """One segmentation request: a picture, and points and / or a box inside it.

    params: points ([[x, y, label], ...] or its JSON), box ([x0, y0, x1, y1] or its JSON);
    inputs: image (an array, a PIL image or a path)."""
    from .model import check_prompt, parse_box, parse_points, to_rgb

    rgb = to_rgb(inputs.get("image"))
    points, box = parse_points(params.get("points")), parse_box(params.get("box"))
    height, width = rgb.shape[:2]
    check_prompt(points, box, width, height)


def recognises(path: str | Path) -> bool:
    """A SAM folder: its config.json says model_type "sam" (or lists SamModel)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (config.get("model_type") == "sam"
                                         or "SamModel" in (config.get("architectures") or []))


def store_added(engine, entry: dict) -> None:
    """A stored SAM becomes an engine model (a second call for the same entry does nothing)."""
    from .model import register_entry

    register_entry(engine, entry)


def store_removed(engine, entry: dict) -> None:
    engine.unregister(entry["name"])
