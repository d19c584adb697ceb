"""Background: find the person in a photo or a video and make the rest transparent, blurred, one
colour, or another picture (MediaPipe selfie segmentation)."""
from __future__ import annotations

import gradio as gr
import numpy as np

from engine import Engine
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, page_only,
                           photo_input, picture_file_input, sub_tab, video_input, video_output, run_button)
from ui.jobs import start_job
from ui.safety import gate_output

from . import check
from . import model as bg

MODES = list(bg.MODES)
VIDEO_MODES = list(bg.VIDEO_MODES)


def remove_background(engine: Engine, image: np.ndarray | None, mode: str,
                      color: str | None = bg.DEFAULT_COLOR, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Find the person in a photo and remove, blur or replace the background.

    Args:
        image: the photo, RGB.
        mode: "transparent" (PNG with the person's mask as alpha), "blur" (background blurred),
            "color" (background one colour) or "image" (background replaced by `background`).
        color: the background colour for mode "color", e.g. "#ffffff" (the default, white).
        background: the new background picture for mode "image"; scaled to cover the photo
            and cropped at its centre.

    Returns:
        The result at the photo's size (RGBA for "transparent", else RGB), and the mask as a
        gray picture (white is person). Edges are soft: the mask is made at 256x256 and scaled up.
    """
    check({"mode": mode, "color": color}, {"image": image, "background": background})
    # The net always sees 256x256: one input-size bucket covers every picture.
    with engine.run("remove_background") as run:
        mask = bg.segment(run.call, image)
    result = bg.composite(image, mask, mode, color=color, background=background)
    return gate_output(engine, result), mask


def remove_background_video(engine: Engine, video: str | None, mode: str,
                            color: str | None = bg.DEFAULT_COLOR, background: str | None = None,
                            progress=gr.Progress()) -> str:
    """Blur or replace the background of every frame of a video; frame count, fps and audio
    are kept. Runs as a job on the queue.

    Args:
        video: the video file.
        mode: "blur", "color" or "image" (an MP4 has no alpha, so "transparent" is refused).
        color: the background colour for mode "color", e.g. "#00ff00" (default white).
        background: path of the new background picture for mode "image".

    Returns:
        The video (H.264 MP4). Each frame is segmented on its own, so masks may shimmer a
        little where the person's edge is uncertain.
    """
    inputs = {"video": video}
    if background and bg.mode_name(mode) == bg.IMAGE:
        inputs["background"] = background
    # Checked here before the colour is parsed into the job's params (submit checks those again).
    check({"mode": mode, "color": color}, inputs)
    params = {"mode": bg.mode_name(mode), "color": bg.hex_color(bg.parse_color(color))}
    return start_job(engine, "remove_background_video", params, inputs, progress)


def show_options(mode: str):
    """The colour picker for mode color, the background picture for mode image."""
    return gr.update(visible=mode == bg.COLOR), gr.update(visible=mode == bg.IMAGE)


def build(engine: Engine) -> None:
    with gr.Tabs():
        with sub_tab("Photo", "Finds the person (MediaPipe selfie segmentation, made for one or two people "
                     "close to the camera) and makes the rest **transparent**, **blurred**, one "
                     "**color**, or another **image**. The mask is found at 256x256 and scaled to "
                     "the photo, so its edges are soft; fine hair is not traced."):
            with gr.Column():
                image = photo_input("Photo")
                mode = gr.Radio(MODES, value=bg.TRANSPARENT, label="Background")
                color = gr.ColorPicker(value=bg.DEFAULT_COLOR, label="Color", visible=False)
                background = photo_input("New background", visible=False)
                run = run_button("Remove background")
            with gr.Column():
                result = image_output("Result")
                mask = image_output("Mask (white is person)")
            page_only(mode.change, show_options, mode, [color, background])
            on_click(engine, run, remove_background, "remove the background", [image, mode, color, background],
                     [result, mask], api_name="remove_background")
        with sub_tab("Video", f"{VIDEO_JOB_NOTE} Frames, fps and sound are kept. An MP4 has no transparency, "
                     "so the background is blurred, one color, or a picture."):
            with gr.Column():
                video = video_input()
                video_mode = gr.Radio(VIDEO_MODES, value=bg.BLUR, label="Background")
                video_color = gr.ColorPicker(value=bg.DEFAULT_COLOR, label="Color", visible=False)
                video_background = picture_file_input("New background", visible=False)
                go = run_button("Replace the background")
            replaced = video_output("Result")
            page_only(video_mode.change, show_options, video_mode, [video_color, video_background])
            on_click_queued(engine, go, remove_background_video, "replace the background of the video",
                            [video, video_mode, video_color, video_background], replaced,
                            api_name="remove_background_video")
