"""Faces: boxes, 5 landmarks and scores from the one shared face detector."""
from __future__ import annotations

import gradio as gr
import numpy as np

from app.errors import user_errors
from engine import Engine, pixel_bucket
from zoo import face_detector
from zoo.catalog import FACE_DETECTOR, unavailable_reason

TITLE = "Faces"


def unavailable() -> str | None:
    return unavailable_reason(FACE_DETECTOR)


def build(engine: Engine) -> None:
    def detect_faces(image: np.ndarray | None) -> tuple[np.ndarray, dict]:
        """Find faces in an image.

        Args:
            image: the photo to search, RGB.

        Returns:
            The image with boxes and landmarks drawn, and JSON
            {"faces": [{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] x5]}]}
            in input pixel coordinates.
        """
        if image is None:
            raise gr.Error("Upload an image first.")
        height, width = image.shape[:2]
        with user_errors("detect faces"):
            faces = engine.infer("detect_faces", FACE_DETECTOR,
                                 lambda model: face_detector.detect_faces(model, image),
                                 bucket=pixel_bucket(width, height))
        return face_detector.draw_faces(image, faces), {"faces": faces}

    gr.Markdown("Upload a photo: every face gets a box, its score and five landmarks "
                "(eyes, nose, mouth corners). The same detector serves every face feature.")
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Photo", type="numpy", image_mode="RGB", sources=["upload", "clipboard"])
            run = gr.Button("Detect faces", variant="primary")
        with gr.Column():
            annotated = gr.Image(label="Faces found", type="numpy", format="png", interactive=False)
            found = gr.JSON(label="Faces (JSON)")
    run.click(detect_faces, image, [annotated, found], api_name="detect_faces", concurrency_limit=2)
