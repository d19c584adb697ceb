"""Segment: click on a picture (or draw a box with two clicks) and get the object's mask with SAM,
ready to download and use as the inpaint mask in the Generate tab."""
# No `from __future__ import annotations`: Gradio reads click's `evt: gr.SelectData` from the
# annotation itself, which it cannot resolve as a string through the handler wrapper.
import json
from typing import Any

import gradio as gr
import numpy as np

import tabs.segment as capability
from engine import Engine, UserFacingError, pixel_bucket
from tabs.segment import model as sam
from ui.handlers import handler

OBJECT, NOT_OBJECT, BOX = "object (+)", "not the object (−)", "box: two corners"

HOW_TO = ("Click on the object in the right-hand picture: each click adds a point (green: object, red: not the "
          "object), or choose **box** and click two opposite corners. The mask updates after each click; the "
          "first click on a picture takes longest (SAM reads the whole picture once). **For inpainting**: download "
          "the mask (white = the object), then in **Generate → inpaint** upload the picture and put the mask in "
          "*Mask (optional)*; *Grow* adds a margin, which blends better. Through the API, `segment`'s mask image "
          "goes straight into `inpaint`'s mask.")


def _model(engine: Engine, name: str | None) -> str:
    names = sam.sam_models(engine)
    if not names:
        raise UserFacingError(sam.NO_MODEL.replace("**", ""))
    if not name:
        return names[0]
    if name not in names:
        raise UserFacingError(f"There is no SAM model {name!r}; added: {', '.join(names)}.")
    return name


def segment_image(engine: Engine, image: np.ndarray | None, points: Any, box: Any = None, model: str | None = None,
                  grow: int = 0) -> tuple[np.ndarray, dict]:
    """The mask (uint8, 255 = object, the picture's size) and its JSON; UserFacingError for anything a user can fix."""
    name = _model(engine, model)
    capability.check({"points": points, "box": box}, {"image": image})
    parsed_points, parsed_box = sam.parse_points(points), sam.parse_box(box)
    rgb = sam.to_rgb(image)
    height, width = rgb.shape[:2]
    with engine.run("segment", bucket=pixel_bucket(width, height)) as run:
        result = sam.segment(run.call, name, rgb, parsed_points, parsed_box,
                             max_pixels=engine.registry.get(name).max_pixels)
    info = result.info()
    # "box" is the mask's bounding box; "prompt_box" the box given as a prompt.
    info.update(model=name, points=[[p.x, p.y, p.label] for p in parsed_points],
                prompt_box=list(parsed_box) if parsed_box else None, grow_px=int(grow or 0))
    return sam.mask_image(result.mask, grow), info


def segment(engine: Engine, image: np.ndarray | None, points: str | list | None, box: str | list | None = None,
            model: str | None = None, grow: int = 0) -> tuple[np.ndarray, dict]:
    """Segment the object the points (or the box) point at, with SAM.

    Args:
        image: the picture.
        points: JSON list of [x, y, label] in the picture's pixels; label 1 = the object, 0 = not the object
            (e.g. [[120, 80, 1], [300, 40, 0]]). May be empty when a box is given.
        box: optional JSON [x0, y0, x1, y1] around the object.
        model: optional: the SAM model's name (as the Models tab lists it); default the first one added.
        grow: optional: grow the mask by this many pixels on every side (helps inpainting).

    Returns:
        The mask as a PNG of the picture's size (white = the object; usable as the inpaint mask) and a JSON
        with area (pixels), area_fraction, box [x0, y0, x1, y1] of the mask, score (SAM's predicted IoU).
    """
    return segment_image(engine, image, points, box, model, grow)


# ---------------------------------------------------------------------------------- clicks

def _fresh() -> dict:
    return {"points": [], "box": None, "corner": None, "history": []}


def _prompt_text(state: dict) -> tuple[str, str]:
    points = json.dumps([[round(x), round(y), label] for x, y, label in state["points"]])
    return points, json.dumps([round(v) for v in state["box"]]) if state["box"] else ""


def _draw(image, state: dict, mask: np.ndarray | None = None):
    points = [sam.Point(x, y, label) for x, y, label in state["points"]]
    if state["corner"] is not None:
        points.append(sam.Point(*state["corner"], label=1))
    return sam.overlay(image, mask, points, state["box"])


def _run(engine: Engine, image, state: dict, model: str | None, grow: int):
    if not state["points"] and state["box"] is None:
        return (_draw(image, state), None, None, *_prompt_text(state))
    mask, info = segment_image(engine, image, state["points"], state["box"], model, grow)
    return (_draw(image, state, mask > 0), mask, info, *_prompt_text(state))


def new_picture(engine: Engine, image):
    """A new picture (or Clear): no points, no box, no mask."""
    state = _fresh()
    canvas = sam.overlay(image, None) if image is not None else None
    return canvas, None, None, state, "[]", ""


def click(engine: Engine, image, state: dict, mode: str, model: str | None, grow: int, evt: gr.SelectData):
    """A click on the picture: a point (object or not), or a corner of the box; the mask follows."""
    if image is None:
        raise UserFacingError("Upload a picture first.")
    _model(engine, model)
    x, y = (float(v) for v in evt.index[:2])
    state = dict(state or _fresh())
    if mode == BOX:
        if state["corner"] is None:
            state["corner"] = (x, y)
            return (_draw(image, state), gr.update(), gr.update(), state, *_prompt_text(state))
        (x0, y0), state["corner"] = state["corner"], None
        if abs(x - x0) < 2 or abs(y - y0) < 2:
            raise UserFacingError("The two corners are too close: click two opposite corners of a box.")
        state["box"] = [min(x0, x), min(y0, y), max(x0, x), max(y0, y)]
        state["history"] = state["history"] + ["box"]
    else:
        state["points"] = state["points"] + [[x, y, 0 if mode == NOT_OBJECT else 1]]
        state["history"] = state["history"] + ["point"]
    canvas, mask, info, points, box = _run(engine, image, state, model, grow)
    return canvas, mask, info, state, points, box


def undo(engine: Engine, image, state: dict, model: str | None, grow: int):
    """Take back the last point or box (or a box's first corner)."""
    state = dict(state or _fresh())
    if state["corner"] is not None:
        state["corner"] = None
    elif state["history"]:
        last = state["history"][-1]
        state["history"] = state["history"][:-1]
        if last == "box":
            state["box"] = None
        else:
            state["points"] = state["points"][:-1]
    if image is None:
        return None, None, None, state, "[]", ""
    canvas, mask, info, points, box = _run(engine, image, state, model, grow)
    return canvas, mask, info, state, points, box


def regrow(engine: Engine, image, state: dict, model: str | None, grow: int):
    """The same mask with another margin."""
    if image is None or not (state and (state["points"] or state["box"])):
        return gr.update(), gr.update()
    return segment_image(engine, image, state["points"], state["box"], model, grow)


def refresh(engine: Engine, current: str | None):
    """The SAM models added so far (one added in the Models tab after start-up shows up here)."""
    names = sam.sam_models(engine)
    value = current if current in names else (names[0] if names else None)
    return gr.update(choices=names, value=value), gr.update(visible=not names)


# ---------------------------------------------------------------------------------- layout

def build(engine: Engine) -> None:
    names = sam.sam_models(engine)
    notice = gr.Markdown(sam.NO_MODEL + " Then press ↻ here.", visible=not names)
    with gr.Row():
        # Custom values: a model added after start-up is not among the choices an API session starts with.
        model = gr.Dropdown(names, value=names[0] if names else None, label="SAM model", scale=4,
                            allow_custom_value=True)
        reload = gr.Button("↻", scale=0, min_width=48)
    gr.Markdown(HOW_TO)
    state = gr.State(_fresh())
    with gr.Row():
        with gr.Column():
            picture = gr.Image(label="Picture", type="numpy", image_mode="RGB", sources=["upload", "clipboard"])
            mode = gr.Radio([OBJECT, NOT_OBJECT, BOX], value=OBJECT, label="A click adds")
            with gr.Row():
                undo_b = gr.Button("Undo")
                clear_b = gr.Button("Clear")
            grow = gr.Slider(0, 64, value=0, step=1, label="Grow the mask (px)")
            with gr.Accordion("Points and box (the segment API's inputs)", open=False):
                points_box = gr.Textbox(label="Points: [[x, y, label], ...] (label 1 object, 0 not)", value="[]")
                box_box = gr.Textbox(label="Box: [x0, y0, x1, y1]", value="")
                go = gr.Button("Segment with these")
        with gr.Column():
            canvas = gr.Image(label="Click here", type="numpy", interactive=False, format="png")
            mask = gr.Image(label="Mask (white = the object): download for inpaint", type="numpy", image_mode="L",
                            format="png", interactive=False)
            info = gr.JSON(label="Area, box, score")

    action = "segment the picture"
    shown = [canvas, mask, info, state, points_box, box_box]
    picture.change(handler(engine, new_picture, action), picture, shown, api_visibility="private",
                   show_progress="hidden")
    canvas.select(handler(engine, click, action), [picture, state, mode, model, grow], shown,
                  api_visibility="private", concurrency_limit=2, concurrency_id="segment")
    undo_b.click(handler(engine, undo, action), [picture, state, model, grow], shown,
                 api_visibility="private", concurrency_limit=2, concurrency_id="segment")
    clear_b.click(handler(engine, new_picture, action), picture, shown, api_visibility="private",
                  show_progress="hidden")
    grow.release(handler(engine, regrow, action), [picture, state, model, grow], [mask, info],
                 api_visibility="private", concurrency_limit=2, concurrency_id="segment")
    go.click(handler(engine, segment, action), [picture, points_box, box_box, model, grow], [mask, info],
             api_name="segment", concurrency_limit=2, concurrency_id="segment")
    reload.click(handler(engine, refresh, "list the SAM models"), model, [model, notice], api_visibility="private",
                 show_progress="hidden")
