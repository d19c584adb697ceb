"""Faces: detect faces, and hide them in images and videos, all with the one shared detector."""
from __future__ import annotations

import gradio as gr
import numpy as np

from app.errors import user_errors
from app.safety import gate_output
from app.jobs_tab import follow_job
from engine import Engine, pixel_bucket
from zoo import anonymize, face_detector
from zoo.catalog import FACE_DETECTOR, unavailable_reason

TITLE = "Faces"
MODES = list(anonymize.MODES)


def unavailable() -> str | None:
    return unavailable_reason(FACE_DETECTOR)


def build(engine: Engine) -> None:
    max_pixels = engine.registry.get(FACE_DETECTOR).max_pixels

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
        return gate_output(engine, face_detector.draw_faces(image, faces)), {"faces": faces}

    def blur_faces_image(image: np.ndarray | None, mode: str) -> np.ndarray:
        """Hide every face in an image.

        Args:
            image: the photo, RGB.
            mode: "blur" or "pixelate".

        Returns:
            The image with each detected face blurred or pixelated.
        """
        if image is None:
            raise gr.Error("Upload an image first.")
        if mode not in MODES:
            raise gr.Error(f"Mode must be one of {', '.join(MODES)}.")
        height, width = image.shape[:2]
        with user_errors("hide faces"):
            hidden = engine.infer("blur_faces_image", FACE_DETECTOR,
                                  lambda model: anonymize.find_and_hide(model, image[None], mode, max_pixels)[0],
                                  bucket=pixel_bucket(width, height))
        return gate_output(engine, hidden)

    def blur_faces_video(video: str | None, mode: str, progress=gr.Progress()) -> str:
        """Hide every face in a video; the audio is kept. Runs as a job on the queue.

        Args:
            video: the video file.
            mode: "blur" or "pixelate".

        Returns:
            The processed video (H.264 MP4, same frames, fps and audio).
        """
        if not video:
            raise gr.Error("Upload a video first.")
        if mode not in MODES:
            raise gr.Error(f"Mode must be one of {', '.join(MODES)}.")
        job_id = engine.jobs.submit("blur_faces_video", {"mode": mode}, inputs={"video": video})
        return follow_job(engine, job_id, progress)

    with gr.Tabs():
        with gr.Tab("Detect"):
            gr.Markdown("Every face gets a box, its score and five landmarks (eyes, nose, mouth corners). "
                        "The same detector serves every face feature.")
            with gr.Row():
                with gr.Column():
                    image = gr.Image(label="Photo", type="numpy", image_mode="RGB",
                                     sources=["upload", "clipboard"])
                    run = gr.Button("Detect faces", variant="primary")
                with gr.Column():
                    annotated = gr.Image(label="Faces found", type="numpy", format="png", interactive=False)
                    found = gr.JSON(label="Faces (JSON)")
            run.click(detect_faces, image, [annotated, found], api_name="detect_faces", concurrency_limit=2)
        with gr.Tab("Hide in a photo"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(label="Photo", type="numpy", image_mode="RGB",
                                     sources=["upload", "clipboard"])
                    photo_mode = gr.Radio(MODES, value="blur", label="How to hide")
                    hide = gr.Button("Hide faces", variant="primary")
                hidden = gr.Image(label="Faces hidden", type="numpy", format="png", interactive=False)
            hide.click(blur_faces_image, [photo, photo_mode], hidden, api_name="blur_faces_image",
                       concurrency_limit=2)
        with gr.Tab("Hide in a video"):
            gr.Markdown("The video runs as a job: it survives a closed browser and a restart, and "
                        "shows on the Jobs tab. Every frame is searched; the sound is kept.")
            with gr.Row():
                with gr.Column():
                    video = gr.Video(label="Video", sources=["upload"])
                    video_mode = gr.Radio(MODES, value="blur", label="How to hide")
                    go = gr.Button("Hide faces in the video", variant="primary")
                result = gr.Video(label="Faces hidden", interactive=False)
            # Many videos may be queued: the job queue, not Gradio, decides what runs when.
            go.click(blur_faces_video, [video, video_mode], result, api_name="blur_faces_video",
                     concurrency_limit=None)
