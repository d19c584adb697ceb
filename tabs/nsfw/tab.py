"""NSFW check: how likely an image is pornographic, per Yahoo's Open-NSFW classifier."""
from __future__ import annotations

import gradio as gr
import numpy as np

from ui.errors import user_errors
from engine import Engine
from analysers import nsfw




def build(engine: Engine) -> None:
    def nsfw_check(image: np.ndarray | None) -> dict:
        """Score how likely an image is pornographic (Yahoo Open-NSFW).

        Args:
            image: the image to check, RGB.

        Returns:
            JSON {"nsfw": score}, score between 0 and 1. Yahoo's guidance: below 0.2 is safe,
            above 0.8 is not, in between needs a second look.
        """
        if image is None:
            raise gr.Error("Upload an image first.")
        if image.ndim < 2 or 0 in image.shape[:2]:
            raise gr.Error("This image is empty.")
        with user_errors("check the image"):
            return {"nsfw": nsfw.check(engine, image)}

    gr.Markdown("Scores an image with Yahoo's Open-NSFW model: the probability that it is "
                "pornographic. Below 0.2 is safe, above 0.8 is not; in between, look again. "
                "It knows nothing about violence or other kinds of unsafe content. "
                "The same check can hide images behind public links.")
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image", type="numpy", image_mode="RGB", sources=["upload", "clipboard"])
            run = gr.Button("Check", variant="primary")
        score = gr.JSON(label="Score (JSON)")
    run.click(nsfw_check, image, score, api_name="nsfw_check", concurrency_limit=2)
