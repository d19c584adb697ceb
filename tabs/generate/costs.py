"""The cost line of the generate tabs (ui/costs.py): a request's size for its time is pixels x
images x the denoising steps that run ('pxsteps'); its run opens with the images' pixels, which
memory follows (tab._run's bucket). The functions take the tab's inputs in the order the buttons
send them."""
from __future__ import annotations

import gradio as gr

from engine import Engine, pixel_bucket
from engine.predict import size_key
from ui import costs
from ui.handlers import handler


def _sides(width, height, batch) -> tuple[int, int, int]:
    return int(width or 512), int(height or 512), max(int(batch or 1), 1)


def txt2img_size(model, prompt, negative, steps, guidance, width, height, seed, batch, strength=1.0, *_):
    """The request's size for its time: pixels x images x denoising steps that run."""
    w, h, n = _sides(width, height, batch)
    return size_key("pxsteps", w * h * n * max(round(float(steps or 1) * float(strength)), 1))


def txt2img_bucket(model, prompt, negative, steps, guidance, width, height, seed, batch, *_):
    """The size key its run opens with (_run): memory follows the images' pixels, not the steps."""
    w, h, n = _sides(width, height, batch)
    return pixel_bucket(w * n, h)


def img2img_size(model, image, prompt, negative, steps, guidance, strength, width, height, seed, batch, *_):
    return txt2img_size(model, prompt, negative, steps, guidance, width, height, seed, batch, strength)


def img2img_bucket(model, image, prompt, negative, steps, guidance, strength, width, height, seed, batch, *_):
    return txt2img_bucket(model, prompt, negative, steps, guidance, width, height, seed, batch)


def inpaint_size(model, image, mask, *rest):
    return img2img_size(model, image, *rest)


def inpaint_bucket(model, image, mask, *rest):
    return img2img_bucket(model, image, *rest)


def chosen_model(model, *_):
    """The model a generate request uses: the one picked (its first input)."""
    return [model] if model else []


def costed(engine: Engine, button, fn, endpoint: str, inputs: list, size, bucket) -> tuple:
    """fn as a request to `endpoint` whose size `size` tells, and the wiring of the button's cost line."""
    def wire(event) -> None:
        costs.wire(engine, button.cost_line, endpoint, inputs, event, bucket=bucket, size=size,
                   watch=[c for c in inputs if not isinstance(c, gr.Textbox)], models=chosen_model)
    return handler(engine, costs.as_request(fn, endpoint, inputs, size=size), f"run {endpoint}"), wire
