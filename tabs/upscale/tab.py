"""Upscale: enlarge images x2 or x4 with Real-ESRGAN, and videos with its fast model (as a job)."""
from __future__ import annotations

import gradio as gr
import numpy as np

from engine import Engine, pixel_bucket
from tabs.upscale import VIDEO_JOB, check
from tabs.upscale import model as up
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, photo_input,
                           sub_tab, video_input, video_output, run_button)
from ui.jobs import start_job
from ui.safety import gate_output

SCALES = list(up.SCALES)
MODELS = list(up.MODELS)   # "fast", "x4plus"
IMAGE_NOTE = ("**fast** (Real-ESRGAN animevideov3) takes about a second for a small image and "
              "gives crisp edges; it smooths fine texture such as skin or fabric. "
              "**x4plus** (Real-ESRGAN x4plus) keeps photos natural but is ~30x slower on the CPU.")


def upscale(engine: Engine, image: np.ndarray | None, scale: int, model: str) -> np.ndarray:
    """Enlarge an image with Real-ESRGAN.

    Args:
        image: the picture to enlarge, RGB.
        scale: 2 or 4: the result's sides are exactly this many times the input's.
        model: "fast" (realesr-animevideov3: quick, crisp edges, flattens fine texture) or
            "x4plus" (realesrgan-x4plus: best for photos, much slower; x2 is its x4 shrunk by 2).

    Returns:
        The upscaled image, RGB.
    """
    check({"scale": scale, "model": model}, {"image": image})
    scale, name = int(scale), up.MODELS[model]
    height, width = image.shape[:2]
    tiling = up.Tiling(up.DEFAULT_TILE[name])   # halved by the engine on out-of-memory
    result = engine.infer("upscale", name, lambda m: up.upscale(m, image, scale, tiling),
                          bucket=pixel_bucket(width, height), degrade=tiling.degrade)
    return gate_output(engine, result)


def upscale_video(engine: Engine, video: str | None, scale: int, model: str, progress=gr.Progress()) -> str:
    """Enlarge every frame of a video with the fast Real-ESRGAN model; the audio is kept. Runs as a job.

    Args:
        video: the video file.
        scale: 2 or 4. The result may be at most 4K (3840x2160, either orientation).
        model: must be "fast": x4plus is far too slow for video and is refused.

    Returns:
        The upscaled video (H.264 MP4, same frame count, fps and audio).
    """
    params, inputs = {"scale": scale, "model": model}, {"video": video}
    check(params, inputs)
    return start_job(engine, VIDEO_JOB, params, inputs, progress)


def chosen_model(image, scale, model, *_) -> list[str]:
    """The model an upscale request uses (its model choice), for the cost line."""
    return [up.MODELS[model]] if model in up.MODELS else []


def build(engine: Engine) -> None:
    with gr.Tabs():
        with sub_tab("Image", IMAGE_NOTE):
            with gr.Column():
                image = photo_input("Image")
                scale = gr.Radio(SCALES, value=2, label="Scale")
                model = gr.Radio(MODELS, value="fast", label="Model")
                run = run_button("Upscale")
            result = image_output("Upscaled")
            on_click(engine, run, upscale, "upscale the image", [image, scale, model], result, api_name="upscale",
                     models=chosen_model)
        with sub_tab("Video", "Videos use the **fast** model only (x4plus would take hours per minute of video). "
                     f"The result is capped at 4K (3840x2160). {VIDEO_JOB_NOTE} The sound is kept."):
            with gr.Column():
                video = video_input()
                video_scale = gr.Radio(SCALES, value=2, label="Scale")
                video_model = gr.Radio(["fast"], value="fast", label="Model (fast only for video)")
                go = run_button("Upscale the video")
            video_result = video_output("Upscaled")
            on_click_queued(engine, go, upscale_video, "upscale the video", [video, video_scale, video_model],
                            video_result, api_name="upscale_video")
