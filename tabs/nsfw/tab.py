"""NSFW check: how likely an image is pornographic, per Yahoo's Open-NSFW classifier."""
from __future__ import annotations

import gradio as gr
import numpy as np

from analysers import nsfw
from engine import Engine
from tabs.nsfw import check
from ui.components import on_click, run_button


def nsfw_check(engine: Engine, image: np.ndarray | None) -> dict:
    """Score how likely an image is pornographic (Yahoo Open-NSFW).

    Args:
        image: the image to check, RGB.

    Returns:
        JSON {"nsfw": score}, score between 0 and 1. Yahoo's guidance: below 0.2 is safe,
        above 0.8 is not, in between needs a second look.
    """
    check({}, {"image": image})
    # The classifier always sees 224x224: one input-size bucket covers every image.
    with engine.run("nsfw_check") as run:
        return {"nsfw": nsfw.score(run.call, image)}


def build(engine: Engine) -> None:
    gr.Markdown("Scores an image with Yahoo's Open-NSFW model: the probability that it is "
                "pornographic. Below 0.2 is safe, above 0.8 is not; in between, look again. "
                "(43 safe real photos, portraits and people at a table included, all scored under 0.2.) "
                "It knows nothing about violence or other kinds of unsafe content. "
                "The same check can hide images behind public links.")
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image", type="numpy", image_mode="RGB", sources=["upload", "clipboard"])
            run = run_button("Check")
        score = gr.JSON(label="Score (JSON)")
    on_click(engine, run, nsfw_check, "check the image", image, score, api_name="nsfw_check")
