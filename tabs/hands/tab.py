"""Hands: every hand in a photo or a video, 21 landmarks each, left or right, and a gesture."""
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
from . import model as hm
from .skeleton import draw_hands
from .video import hand_files

NO_HAND = "No hand was found in this photo."


def find_hands(engine: Engine, image: np.ndarray | None, min_score: float = geo.MIN_SCORE) -> tuple[np.ndarray, dict]:
    """Find every hand in a photo: 21 landmarks each (wrist, thumb_cmc ... pinky_tip, MediaPipe's
    names), whether it is a left or a right hand, and a gesture.

    Args:
        image: the photo, RGB.
        min_score: the palm detector's threshold, 0.05 to 0.95 (default 0.5, MediaPipe's); lower
            finds hands the detector is less sure of, and more false ones.

    Returns:
        The photo with each hand drawn (left hands orange, right hands cyan, the palm white) and
        the palm detector's box, and JSON {"hands": [{"score", "box": [x1, y1, x2, y2],
        "presence", "handedness": "left" | "right", "handedness_score", "gesture": "open palm" |
        "fist" | "pointing" | "victory" | "thumbs up" | "ok" | null, "fingers": {"thumb": bool,
        ..., "pinky": bool} (extended or not), "keypoints": [{"name", "x", "y", "z"} x 21],
        "world": [{"name", "x", "y", "z"} x 21]}]}: x, y in photo pixels, z on x's scale
        (smaller is nearer the camera, 0 at the wrist), "world" in metres. Handedness is the
        person's own hand in an ordinary photo; for a mirrored (selfie) picture swap it. Best
        palm first; with no hand found, "hands" is empty and "message" says so.
    """
    check({"min_score": min_score}, {"image": image})
    rgb = hm.check_image(image)
    threshold = hm.check_threshold(min_score)
    # The nets always see 192x192 and 224x224 crops: one input-size bucket covers every photo.
    hands = engine.infer("find_hands", hm.HANDS_MODEL, lambda model: hm.find_hands(model, rgb, threshold))
    result = {"hands": [hm.hand_json(h) for h in hands]}
    if not hands:
        result["message"] = NO_HAND
        gr.Info(NO_HAND)
    return gate_output(engine, draw_hands(rgb, hands)), result


def hands_video(engine: Engine, video: str | None, min_score: float = geo.MIN_SCORE,
                progress=gr.Progress()) -> tuple[str, list[str]]:
    """Find every hand in every frame of a video. Runs as a job on the queue.

    Args:
        video: the video file.
        min_score: the palm detector's threshold, 0.05 to 0.95 (default 0.5).

    Returns:
        The video with the hands drawn (frame count, fps and sound kept), and two files with
        every frame's hands: hands.json ({"fps", "width", "height", "frames": [{"frame",
        "time_s", "hands": [as find_hands gives them]}]}) and hands.csv (frame, time_s, hand,
        handedness, gesture, score, presence, name, x, y, z). Each frame is read on its own,
        with no smoothing between frames, so points may jitter by a few pixels.
    """
    params = {"min_score": hm.check_threshold(min_score)}
    inputs = {"video": video}
    check(params, inputs)
    return start_job(engine, VIDEO_JOB, params, inputs, progress, then=_with_files)


def _with_files(result: str):
    return result, hand_files(result)


def build(engine: Engine) -> None:
    with gr.Tabs():
        with sub_tab("Photo", "Finds every hand (MediaPipe's palm detector) and 21 points each (its hand "
                     "landmarker), says left or right, and names the gesture: open palm, fist, pointing, "
                     "victory, thumbs up or ok."):
            with gr.Column():
                image = photo_input("Photo")
                threshold = gr.Slider(0.05, 0.95, value=geo.MIN_SCORE, step=0.05, label="Detection threshold")
                run = run_button("Find hands")
            with gr.Column():
                drawn = image_output("Hands")
                found = gr.JSON(label="Hands")
            on_click(engine, run, find_hands, "find hands", [image, threshold], [drawn, found], api_name="find_hands")
        with sub_tab("Video", f"{VIDEO_JOB_NOTE} Frames, fps and sound are kept; the hands of every frame "
                     "come as JSON and CSV."):
            with gr.Column():
                video = video_input()
                video_threshold = gr.Slider(0.05, 0.95, value=geo.MIN_SCORE, step=0.05, label="Detection threshold")
                go = run_button("Find hands in the video")
            with gr.Column():
                drawn_video = video_output("Hands")
                files = gr.File(label="Hands (JSON, CSV)", file_count="multiple", interactive=False)
            on_click_queued(engine, go, hands_video, "find hands in the video", [video, video_threshold],
                            [drawn_video, files], api_name="hands_video")
