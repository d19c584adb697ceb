"""One page, both nets: turn it upright when the orientation net is sure, then find its regions.
Processing functions take `call(model_name, fn)`, which leases a model for one step."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import model
from .layout import draw_regions, find_regions

# Turn a page only when the net is this sure. Measured (3 crops): a printed page 0.92-0.93 at each
# of the four turns; handwriting in perspective (skimage text) at most 0.57, and half of those
# wrong; photos without text up to 0.71 (coffee, read as upside down).
TURN_MIN_SCORE = 0.8


def check_min_score(min_score: Any) -> float:
    try:
        value = float(min_score)
    except (TypeError, ValueError):
        raise model.DocumentInputError("The minimum score must be a number.") from None
    if not 0.05 <= value <= 0.95:
        raise model.DocumentInputError("The minimum score must be between 0.05 and 0.95.")
    return value


def orient_page(call, image: Any) -> tuple[np.ndarray, dict]:
    """The page turned upright (when the net is sure enough) and {"angle", "score", "scores",
    "turned"}. `call(model_name, fn)` leases a model."""
    rgb = model.page_rgb(image)
    found = call(model.ORIENTATION, lambda net: model.find_orientation(net, rgb))
    found["turned"] = found["angle"] != 0 and found["score"] >= TURN_MIN_SCORE
    return (model.upright(rgb, found["angle"]) if found["turned"] else rgb), found


def analyse_page(call, image: Any, min_score: float = model.DEFAULT_MIN_SCORE,
                 fix_orientation: bool = True) -> tuple[np.ndarray, dict]:
    """The upright page with its layout regions drawn, and {"orientation": ... or None,
    "size": [width, height] of the upright page, "regions": [...]}."""
    min_score = check_min_score(min_score)
    if fix_orientation:
        rgb, orientation = orient_page(call, image)
    else:
        rgb, orientation = model.page_rgb(image), None
    regions = call(model.LAYOUT, lambda net: find_regions(net, rgb, min_score))
    return draw_regions(rgb, regions), {"orientation": orientation, "size": [rgb.shape[1], rgb.shape[0]],
                                        "regions": regions}
