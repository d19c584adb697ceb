"""Clean up: remove JPEG artefacts and noise from photos, and from videos as a job (waifu2x CUNet)."""
from __future__ import annotations

import gradio as gr
import numpy as np

from engine import Engine, pixel_bucket
from tabs.deblock import DEFAULT_LEVEL, VIDEO_JOB, check, level_of
from tabs.deblock import model as cunet
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, photo_input,
                           sub_tab, video_input, video_output, run_button)
from ui.jobs import start_job
from ui.safety import gate_output

LEVELS = list(cunet.LEVELS)
LEVEL_INFO = "0: light (barely touches a clean photo) … 3: strong (heavy JPEG blocks, grain)"
IMAGE_NOTE = ("Removes JPEG blocks, ringing and noise; the size stays the same. **2** suits a "
              "strongly compressed photo (JPEG quality 20-30: +1 to +3 dB closer to the original); "
              "**0** only touches up a clean one. waifu2x was trained on drawings: on photos it "
              "also smooths fine texture such as fur at the stronger levels.")


def clean_up_photo(engine: Engine, image: np.ndarray | None, level: int = DEFAULT_LEVEL) -> np.ndarray:
    """Remove JPEG artefacts (blocks, ringing) and noise from a photo with waifu2x CUNet.

    Args:
        image: the photo to clean, RGB.
        level: strength, 0 (light: barely changes a clean photo), 1, 2 (heavily compressed JPEGs,
            the default) or 3 (strongest: also flattens grain and fine texture).

    Returns:
        The cleaned photo, RGB, the same size.
    """
    check({"level": level}, {"image": image})
    level = level_of({"level": level})
    height, width = np.asarray(image).shape[:2]
    tiling = cunet.Tiling()   # halved by the engine on out-of-memory
    result = engine.infer("clean_up_photo", cunet.DEBLOCK, lambda m: cunet.clean(m, image, level, tiling),
                          bucket=pixel_bucket(width, height), degrade=tiling.degrade)
    return gate_output(engine, result)


def clean_up_video(engine: Engine, video: str | None, level: int = DEFAULT_LEVEL, progress=gr.Progress()) -> str:
    """Remove compression artefacts and noise from every frame of a video; the audio is kept. Runs as a job.

    Args:
        video: the video file, at most 4K (3840x2160, either orientation).
        level: strength 0-3, as for a photo (0 light, 3 strong).

    Returns:
        The cleaned video (H.264 MP4, same size, frame count, fps and audio).
    """
    params, inputs = {"level": level}, {"video": video}
    check(params, inputs)
    return start_job(engine, VIDEO_JOB, params, inputs, progress)


def build(engine: Engine) -> None:
    with gr.Tabs():
        with sub_tab("Photo", IMAGE_NOTE):
            with gr.Column():
                image = photo_input("Photo")
                level = gr.Radio(LEVELS, value=DEFAULT_LEVEL, label="Strength", info=LEVEL_INFO)
                run = run_button("Clean up")
            result = image_output("Cleaned")
            on_click(engine, run, clean_up_photo, "clean up the photo", [image, level], result,
                     api_name="clean_up_photo")
        with sub_tab("Video", "Every frame goes through the same net, in tiles; on a CPU this takes "
                     f"seconds per 720p frame, so keep videos short there. {VIDEO_JOB_NOTE} The sound is kept."):
            with gr.Column():
                video = video_input()
                video_level = gr.Radio(LEVELS, value=DEFAULT_LEVEL, label="Strength", info=LEVEL_INFO)
                go = run_button("Clean up the video")
            video_result = video_output("Cleaned")
            on_click_queued(engine, go, clean_up_video, "clean up the video", [video, video_level],
                            video_result, api_name="clean_up_video")
