"""Face landmarks: MediaPipe's face mesh and irises on every face, with head pose, eye openness
and gaze, in a photo or (as a job) a video."""
from __future__ import annotations

import gradio as gr
import numpy as np

from analysers.face_detector import FACE_DETECTOR
from engine import Engine, pixel_bucket
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, photo_input, sub_tab,
                           video_input, video_output, run_button)
from ui.jobs import start_job
from ui.safety import gate_output

from . import VIDEO_JOB, check
from .faces import NO_FACE, analyse, check_image, draw
from .video import values_file


def face_landmarks(engine: Engine, image: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Place MediaPipe's 468-point face mesh and both irises on every face in a photo, and read
    each face's head pose, eye openness and gaze from them.

    Args:
        image: the photo, RGB.

    Returns:
        The photo with each face's mesh (dots), eyelids, irises and pose drawn, and JSON
        {"faces": [{"box": [x1, y1, x2, y2], "score" (the detector's), "presence" (the mesh's,
        0..1), "head_pose": {"yaw", "pitch", "roll"} (degrees, 0 facing the camera; yaw > 0 turned
        towards the photo's right, pitch > 0 up, roll > 0 leaning clockwise), "eye_openness":
        {"left", "right"} (eye aspect ratio: about 0.25-0.4 open, under 0.15 nearly closed),
        "gaze": {"horizontal" (-1 the iris at the eye's photo-left corner, +1 at its right),
        "vertical" (eye widths below the lids' middle), "left": {...}, "right": {...}},
        "irises": {"left"/"right": {"centre": [x, y], "points": [[x, y] x5], "eyelids": [[x, y] x16]}},
        "mesh": [[x, y, z] x468]}]}, best detector score first. Left and right are the photo's
        (the "left" eye is the person's right eye); x, y in photo pixels, z on x's scale, smaller
        nearer the camera. With no face found, "faces" is empty and "message" says so.
    """
    check({}, {"image": image})
    rgb = check_image(image)
    height, width = rgb.shape[:2]
    max_pixels = engine.registry.get(FACE_DETECTOR).max_pixels
    with engine.run("face_landmarks", bucket=pixel_bucket(width, height)) as run:
        faces, raw = analyse(run.call, rgb, max_pixels)
    result = {"faces": faces}
    if not faces:
        result["message"] = NO_FACE
        gr.Info(NO_FACE)
    return gate_output(engine, draw(rgb, faces, raw)), result


def face_landmarks_video(engine: Engine, video: str | None, progress=gr.Progress()) -> tuple[str, str | None]:
    """Place the face mesh and irises on every face in every frame of a video. Runs as a job on
    the queue.

    Args:
        video: the video file.

    Returns:
        The video with the meshes, irises and poses drawn (frame count, fps and sound kept), and
        landmarks.csv with a row per frame and face: frame, time_s, face, x1, y1, x2, y2, score,
        yaw, pitch, roll, left_eye_openness, right_eye_openness, gaze_horizontal, gaze_vertical,
        left_iris_x, left_iris_y, right_iris_x, right_iris_y (as face_landmarks defines them).
        Each frame is read on its own, with no smoothing, so values may jitter a little.
    """
    inputs = {"video": video}
    check({}, inputs)
    return start_job(engine, VIDEO_JOB, {}, inputs, progress, then=_with_values)


def _with_values(result: str):
    return result, values_file(result)


def build(engine: Engine) -> None:
    with gr.Tabs():
        with sub_tab("Photo", "Every face the shared detector finds gets MediaPipe's 468-point mesh and its "
                     "iris landmarks; from them the head pose (yaw, pitch, roll), how open each eye is, and "
                     "where the irises sit between the eye corners. Left and right are the photo's."):
            with gr.Column():
                image = photo_input("Photo")
                run = run_button("Find landmarks")
            with gr.Column():
                drawn = image_output("Landmarks")
                found = gr.JSON(label="Faces (JSON)")
            on_click(engine, run, face_landmarks, "find face landmarks", image, [drawn, found],
                     api_name="face_landmarks")
        with sub_tab("Video", f"{VIDEO_JOB_NOTE} Frames, fps and sound are kept; every frame's pose, eye "
                     "openness and gaze per face come as CSV."):
            with gr.Column():
                video = video_input()
                go = run_button("Find landmarks in the video")
            with gr.Column():
                drawn_video = video_output("Landmarks")
                values = gr.File(label="Values per frame (CSV)", interactive=False)
            on_click_queued(engine, go, face_landmarks_video, "find face landmarks in the video", video,
                            [drawn_video, values], api_name="face_landmarks_video")
