"""Style: restyle a photo or a video with one of 26 preset painting styles, or a style taken from
any picture."""
from __future__ import annotations

import gradio as gr
import numpy as np

from engine import Engine, pixel_bucket
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, page_only,
                           photo_input, picture_file_input, sub_tab, video_input, video_output, run_button)
from ui.jobs import start_job
from ui.safety import gate_output

from . import check
from . import model as st

STYLES = list(st.STYLES)
PHOTO_NOTE = ("26 preset styles (the networks came without names, so they are numbered), or "
              "**from image**: any picture's style. Photos over 1 megapixel are restyled at "
              "1 MP and scaled back; \"from image\" works at 384 px, so big photos look softer.")


def stylize(engine: Engine, image: np.ndarray | None, style: str,
            style_image: np.ndarray | None = None) -> np.ndarray:
    """Restyle a photo.

    Args:
        image: the photo, RGB (both sides at least 32 px).
        style: a preset, "style 0" ... "style 25", or "from image" to take the style from style_image.
        style_image: the picture whose style is used; needed only with style "from image".

    Returns:
        The restyled photo, the same size as the input.
    """
    check({"style": style}, {"image": image, "style_image": style_image})
    height, width = image.shape[:2]
    max_pixels = engine.registry.get(st.model_for(style)).max_pixels
    with engine.run("stylize", bucket=pixel_bucket(width, height)) as run:
        result = st.restyle(run.call, image, style, style_image, max_pixels)
    return gate_output(engine, result)


def stylize_video(engine: Engine, video: str | None, style: str, style_image: str | None = None,
                  progress=gr.Progress()) -> str:
    """Restyle every frame of a video; frame count, fps and audio are kept. Runs as a job on the queue.

    Args:
        video: the video file.
        style: a preset, "style 0" ... "style 25", or "from image" to take the style from style_image.
        style_image: path of the picture whose style is used; needed only with style "from image".

    Returns:
        The restyled video (H.264 MP4). Each frame is restyled the same way, so a still scene
        stays still; with "from image" the style is read from the picture once per job.
    """
    inputs = {"video": video}
    if style_image and st.is_from_image(style or ""):
        inputs["style_image"] = style_image
    return start_job(engine, "stylize_video", {"style": style}, inputs, progress)


def show_style_image(style: str):
    """The style picture input, for style "from image" only."""
    return gr.update(visible=st.is_from_image(style or ""))


def build(engine: Engine) -> None:
    with gr.Tabs():
        with sub_tab("Photo", PHOTO_NOTE):
            with gr.Column():
                image = photo_input("Photo")
                style = gr.Dropdown(STYLES, value=STYLES[0], label="Style")
                style_image = photo_input("Style image", visible=False)
                run = run_button("Restyle")
            result = image_output("Restyled")
            page_only(style.change, show_style_image, style, style_image)
            on_click(engine, run, stylize, "restyle the image", [image, style, style_image], result,
                     api_name="stylize")
        with sub_tab("Video", f"{VIDEO_JOB_NOTE} Frames, fps and sound are kept."):
            with gr.Column():
                video = video_input()
                video_style = gr.Dropdown(STYLES, value=STYLES[0], label="Style")
                video_style_image = picture_file_input("Style image", visible=False)
                go = run_button("Restyle the video")
            restyled = video_output("Restyled")
            page_only(video_style.change, show_style_image, video_style, video_style_image)
            on_click_queued(engine, go, stylize_video, "restyle the video",
                            [video, video_style, video_style_image], restyled, api_name="stylize_video")
