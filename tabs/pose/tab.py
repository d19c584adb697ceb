"""Body pose: every person in a photo or a video, 33 body landmarks each (MediaPipe BlazePose)."""
from __future__ import annotations

import gradio as gr
import numpy as np

from engine import Engine
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, photo_input, sub_tab,
                           video_input, video_output, run_button)
from ui.jobs import start_job
from ui.safety import gate_output

from . import VIDEO_JOB, check
from . import geometry as geo
from . import model as pm
from .skeleton import draw_poses
from .video import keypoint_files

NO_PERSON = "No person was found in this photo."


def body_pose(engine: Engine, image: np.ndarray | None, min_score: float = geo.MIN_SCORE) -> tuple[np.ndarray, dict]:
    """Find every person in a photo and their body pose: 33 landmarks each, named as MediaPipe
    names them (nose, left_eye, ..., left_shoulder, ..., right_foot_index).

    Args:
        image: the photo, RGB.
        min_score: the person detector's threshold, 0.05 to 0.95 (default 0.5, MediaPipe's);
            lower finds people the detector is less sure of, and more false ones.

    Returns:
        The photo with each skeleton drawn (the person's left side orange, right side cyan;
        points hidden or out of the picture are not drawn) and the detector's box around each
        face, and JSON {"people": [{"score", "box": [x1, y1, x2, y2], "presence",
        "keypoints": [{"name", "x", "y", "z", "visibility", "presence"} x 33],
        "world": [{"name", "x", "y", "z"} x 33]}]}: x, y in photo pixels, z on x's scale
        (smaller is nearer the camera, 0 at the hips), visibility and presence 0..1 (below 0.5:
        hidden or outside the photo, guessed); "world" in metres around the hips. Best detection
        first; with nobody found, "people" is empty and "message" says so.
    """
    check({"min_score": min_score}, {"image": image})
    rgb = pm.check_image(image)
    threshold = pm.check_threshold(min_score)
    # The nets always see 224x224 and 256x256 crops: one input-size bucket covers every photo.
    poses = engine.infer("body_pose", pm.POSE_MODEL, lambda model: pm.find_poses(model, rgb, threshold))
    result = {"people": [pm.pose_json(p) for p in poses]}
    if not poses:
        result["message"] = NO_PERSON
        gr.Info(NO_PERSON)
    return gate_output(engine, draw_poses(rgb, poses)), result


def body_pose_video(engine: Engine, video: str | None, min_score: float = geo.MIN_SCORE,
                    progress=gr.Progress()) -> tuple[str, list[str]]:
    """Find the body pose of every person in every frame of a video. Runs as a job on the queue.

    Args:
        video: the video file.
        min_score: the person detector's threshold, 0.05 to 0.95 (default 0.5).

    Returns:
        The video with the skeletons drawn (frame count, fps and sound kept), and two files
        with every frame's keypoints: keypoints.json ({"fps", "width", "height", "frames":
        [{"frame", "time_s", "people": [as body_pose gives them]}]}) and keypoints.csv (frame,
        time_s, person, score, name, x, y, z, visibility, presence). Each frame is read on its
        own, with no smoothing between frames, so points may jitter by a few pixels.
    """
    params = {"min_score": pm.check_threshold(min_score)}
    inputs = {"video": video}
    check(params, inputs)
    return start_job(engine, VIDEO_JOB, params, inputs, progress, then=_with_keypoints)


def _with_keypoints(result: str):
    return result, keypoint_files(result)


def build(engine: Engine) -> None:
    with gr.Tabs():
        with sub_tab("Photo", "Finds every person (MediaPipe's pose detector, made for people a few metres "
                     "from the camera) and 33 body points each (BlazePose full). Points the net "
                     "judges hidden or outside the photo are left out of the drawing but kept in the JSON, "
                     "with their visibility."):
            with gr.Column():
                image = photo_input("Photo")
                threshold = gr.Slider(0.05, 0.95, value=geo.MIN_SCORE, step=0.05, label="Detection threshold")
                run = run_button("Find poses")
            with gr.Column():
                drawn = image_output("Poses")
                found = gr.JSON(label="Keypoints")
            on_click(engine, run, body_pose, "find body poses", [image, threshold], [drawn, found],
                     api_name="body_pose")
        with sub_tab("Video", f"{VIDEO_JOB_NOTE} Frames, fps and sound are kept; the keypoints of every "
                     "frame come as JSON and CSV."):
            with gr.Column():
                video = video_input()
                video_threshold = gr.Slider(0.05, 0.95, value=geo.MIN_SCORE, step=0.05, label="Detection threshold")
                go = run_button("Find poses in the video")
            with gr.Column():
                drawn_video = video_output("Poses")
                files = gr.File(label="Keypoints (JSON, CSV)", file_count="multiple", interactive=False)
            on_click_queued(engine, go, body_pose_video, "find body poses in the video", [video, video_threshold],
                            [drawn_video, files], api_name="body_pose_video")
