"""One generation request and the one check of it.

`check_request` is the whole validation of a request: the tab's handlers, the pipeline and the
batch job's submit check (`check`, the capability contract's) all call it, so a bad request gets
the same plain message wherever it comes in.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import UserFacingError
from engine.requests import given

MODES = ("txt2img", "img2img", "inpaint")
MAX_SIDE = 2048
MAX_STEPS = 150
MAX_BATCH = 8
MAX_COUNT = 500  # images in one batch job
SEED_MAX = 2**32 - 1


class DiffusionInputError(UserFacingError, ValueError):
    """Bad request a user can fix (empty prompt, size, steps, missing image). The message says how."""


@dataclass(frozen=True)
class Request:
    """One generation call. seed -1 picks a random seed (recorded in the images)."""

    prompt: str
    negative_prompt: str = ""
    steps: int = 25
    guidance: float = 7.0
    width: int | None = None  # None: the model's native size (txt2img) or the input's (img2img)
    height: int | None = None
    seed: int = -1
    batch: int = 1
    strength: float = 0.75  # img2img / inpaint: how much of the input is repainted (1 = all)

    def resolved(self) -> "Request":
        """The same request with a concrete seed (seed + i of a batch job stays below SEED_MAX)."""
        if self.seed is None or int(self.seed) < 0:
            return dataclasses.replace(self, seed=random.randint(0, SEED_MAX - MAX_COUNT))
        return self

    @classmethod
    def from_dict(cls, fields: dict) -> "Request":
        """A request from its fields as a job stores them (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in fields.items() if k in names})


def check_request(mode: str, request: Request, image: Any = None, mask: Any = None) -> Request:
    """The request with a concrete seed and numbers as numbers, or a DiffusionInputError that says
    what to change. `image`, `mask`: the inputs (arrays, images or paths; None or "" when absent)."""
    if mode not in MODES:
        raise DiffusionInputError(f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    if mode == "inpaint" and isinstance(mask, np.ndarray) and not mask.any():
        raise DiffusionInputError("The mask is empty: paint (or upload) white where the picture should change.")
    if not str(request.prompt or "").strip():
        raise DiffusionInputError("Write a prompt first.")
    if not 1 <= int(request.steps) <= MAX_STEPS:
        raise DiffusionInputError(f"Steps must be 1 to {MAX_STEPS}, not {request.steps}.")
    if not 0 <= float(request.guidance) <= 30:
        raise DiffusionInputError(f"Guidance must be 0 to 30, not {request.guidance}.")
    if not 1 <= int(request.batch) <= MAX_BATCH:
        raise DiffusionInputError(f"Batch size must be 1 to {MAX_BATCH}, not {request.batch}; "
                                  "for more images use a batch job.")
    for side in (request.width, request.height):
        if side is not None and not 64 <= int(side) <= MAX_SIDE:
            raise DiffusionInputError(f"Width and height must be 64 to {MAX_SIDE} px, not {side}.")
    if mode != "txt2img":
        if not given(image):
            raise DiffusionInputError(f"{mode} needs an input image.")
        if not 0 < float(request.strength) <= 1:
            raise DiffusionInputError(f"Strength must be above 0 and at most 1, not {request.strength}.")
        if int(request.steps) * float(request.strength) < 1:
            raise DiffusionInputError(
                f"Steps x strength is below 1 ({request.steps} x {request.strength}): nothing would be "
                "denoised. Raise the steps or the strength.")
    if mode == "inpaint" and not given(mask):
        raise DiffusionInputError("Inpaint needs a mask: white where the picture is repainted.")
    if request.seed is not None and int(request.seed) > SEED_MAX:
        raise DiffusionInputError(f"The seed must be 0 to {SEED_MAX} (or -1 for a random one).")
    return dataclasses.replace(request.resolved(), steps=int(request.steps), batch=int(request.batch),
                               guidance=float(request.guidance), strength=float(request.strength))


def check(params: dict, inputs: dict) -> None:
    """The capability's check. params: mode, request (Request's fields) and, for a batch job,
    count (its images are made one at a time); inputs: image and mask when given."""
    fields = dict(params.get("request") or {})
    if "count" in params:
        fields["batch"] = 1
    check_request(params.get("mode"), Request.from_dict(fields), inputs.get("image"), inputs.get("mask"))
    if "count" in params and not 1 <= int(params["count"]) <= MAX_COUNT:
        raise DiffusionInputError(f"A batch job makes 1 to {MAX_COUNT} images, not {params['count']}.")
