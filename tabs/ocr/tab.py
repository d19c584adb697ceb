"""Read text: find and read printed text in images, and turn the text shown in a video into subtitles."""
from __future__ import annotations

import gradio as gr
import numpy as np

from engine import Engine, pixel_bucket
from tabs.ocr import check
from tabs.ocr import model as ocr
from ui.components import (VIDEO_JOB_NOTE, on_click, on_click_queued, photo_input, picture_and_json, sub_tab,
                           video_input, run_button)
from ui.jobs import start_job
from ui.safety import gate_output


IMAGE_NOTE = ("Every line of printed text gets a box, its reading and a confidence. "
              "Latin letters (accents dropped: ü is read as u), digits and Chinese are read; "
              "a space between two words in capitals is sometimes lost. Measured on real "
              "images: about 1 character in 100 wrong on printed pages, 1 in 7 on photos of "
              "signs.")


def read_text(engine: Engine, image: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Find and read every line of printed text in an image.

    Args:
        image: the picture to read, RGB.

    Returns:
        The image with each line's box and text drawn, and JSON
        {"lines": [{"box": [[x, y] x4], "text": str, "score": float}]}: corners clockwise
        from the top-left, in input pixel coordinates; lines top to bottom.
    """
    check({}, {"image": image})
    height, width = image.shape[:2]
    lines = engine.infer("ocr", ocr.OCR, lambda model: ocr.read_text(model, image),
                         bucket=pixel_bucket(width, height))
    return gate_output(engine, ocr.draw_lines(image, lines)), {"lines": lines}


def ocr_video(engine: Engine, video: str | None, samples_per_second: float = ocr.DEFAULT_SAMPLES_PER_SECOND,
              progress=gr.Progress()) -> str:
    """Read the text shown in a video and write it as subtitles. Runs as a job on the queue.

    Args:
        video: the video file.
        samples_per_second: how many frames a second are read (0.25 to 10; default 2). Text
            shown for a shorter time than one sample interval may be missed.

    Returns:
        An SRT subtitle file: one numbered cue per stretch of unchanged text, with its start
        and end time (HH:MM:SS,mmm).
    """
    params, inputs = {"samples_per_second": samples_per_second}, {"video": video}
    check(params, inputs)
    return start_job(engine, ocr.VIDEO_JOB, params, inputs, progress)


def build(engine: Engine) -> None:
    with gr.Tabs():
        with sub_tab("Image", IMAGE_NOTE):
            with gr.Column():
                image = photo_input("Image")
                run = run_button("Read text")
            annotated, found = picture_and_json("Text found", "Lines (JSON)")
            on_click(engine, run, read_text, "read the text", image, [annotated, found], api_name="ocr")
        with sub_tab("Video to subtitles", f"{VIDEO_JOB_NOTE} A few frames a second are read; text that stays the same "
                     "becomes one subtitle."):
            with gr.Column():
                video = video_input()
                rate = gr.Slider(ocr.MIN_SAMPLES_PER_SECOND, ocr.MAX_SAMPLES_PER_SECOND, value=ocr.DEFAULT_SAMPLES_PER_SECOND,
                                 step=0.25, label="Frames read per second")
                go = run_button("Make subtitles")
            subtitles = gr.File(label="Subtitles (SRT)", interactive=False)
            on_click_queued(engine, go, ocr_video, "make the subtitles", [video, rate], subtitles,
                            api_name="ocr_video")
