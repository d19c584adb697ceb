"""Voices: how alike two voices are, and who speaks when in a recording (resemblyzer)."""
from __future__ import annotations

import functools
import json

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine import Engine, UserFacingError, seconds_bucket
from engine.media.audio import MediaError, probe_audio, read_audio
from ui.components import media_input, on_click, on_click_queued, sub_tab, run_button
from ui.jobs import start_job

from . import RECORDINGS, about, check
from . import model as vo

# What the score and the line mean, measured on real speech (`python -m bench quality`, docs/quality.md).
THRESHOLD_NOTE = (f"*Similarity* is the cosine of two voice prints (resemblyzer): real same-speaker pairs score "
                  f"about 0.8, different speakers about 0.6. *Same speaker* means a similarity of at least "
                  f"{vo.SAME_SPEAKER:.2f}: on real meeting speech (AMI, clips of 2-4 s) about "
                  f"{vo.SAME_SPEAKER_FRR:.0%} of same-speaker pairs are called different there, and "
                  f"{vo.SAME_SPEAKER_FAR:.0%} of different-speaker pairs the same (shorter clips err more). "
                  f"Words or letters read one by one score lower: on such recordings (KDE's language "
                  f"games) 10-25 % of same-speaker pairs fall under the line, and 1-2 % of different "
                  f"speakers pass it. A score near the line is uncertain.")

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def timeline(segments: list[dict], duration_s: float, width: int = 900) -> np.ndarray:
    """A row per speaker, a bar per turn, and at most ~12 time ticks."""
    names = list(dict.fromkeys(s["speaker"] for s in segments)) or ["no speech"]
    # The top is left blank: Gradio lays the image's label and buttons over it, which hid the
    # first speaker's name and the end of its row.
    label_w, row_h, top = 110, 30, 48
    height = top + row_h * len(names) + 26
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)
    span = max(duration_s, max((s["end"] for s in segments), default=0.0), 1e-3)
    scale = (width - label_w - 10) / span
    for row, name in enumerate(names):
        y = top + row * row_h
        draw.text((4, y + 7), name, fill="black", font=font)
        draw.rectangle([label_w, y + 3, width - 10, y + row_h - 3], fill=(240, 240, 240))
    for s in segments:
        row = names.index(s["speaker"])
        y = top + row * row_h
        x0, x1 = label_w + s["start"] * scale, label_w + s["end"] * scale
        draw.rectangle([x0, y + 3, max(x0 + 1, x1), y + row_h - 3], fill=_COLOURS[row % len(_COLOURS)])
    tick = next((t for t in (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800) if span / t <= 12), 3600)
    axis = top + row_h * len(names) + 2
    for k in range(int(span // tick) + 1):
        x = label_w + k * tick * scale
        draw.line([x, axis, x, axis + 4], fill="black")
        text = f"{k * tick:.0f}s" if tick < 60 else f"{k * tick / 60:.0f}min"
        wide = draw.textlength(text, font=font)
        # The last tick's label goes left of its tick where it would run off the picture.
        draw.text((x + 2 if x + 2 + wide <= width else x - 2 - wide, axis + 5), text, fill="black", font=font)
    return np.asarray(image)


def _first_minute(path: str, name: str) -> np.ndarray:
    """The first COMPARE_S of a recording at the encoder's rate; a failure says which recording."""
    try:
        return read_audio(path, vo.RATE, duration_s=vo.COMPARE_S)
    except MediaError as exc:
        raise UserFacingError(about(RECORDINGS[name], str(exc))) from exc


def compare_voices(engine: Engine, first: str | None, second: str | None) -> dict:
    """How alike two voices sound, from the first minute of each recording.

    Args:
        first: an audio or video file with one person speaking (a few seconds is enough).
        second: another such file.

    Returns:
        {"similarity": cosine of the two voice prints (on real meeting speech, same-speaker pairs
        scored 0.8 in the median, different speakers 0.6), "same_speaker": true when similarity
        >= 0.70, the equal-error point on real meeting speech (AMI): there about 6 % of
        same-speaker pairs fall under it and 8 % of different-speaker pairs reach it}.
    """
    check({}, {"first": first, "second": second})
    a, b = _first_minute(first, "first"), _first_minute(second, "second")
    with engine.run("compare_voices", bucket=seconds_bucket((a.size + b.size) / vo.RATE)) as run:
        return vo.compare_voices(run.call, a, b, vo.RATE)


def diarize(engine: Engine, media: str | None, speakers: int = 2,
            progress=gr.Progress()) -> tuple[dict, np.ndarray]:
    """Who speaks when: the speaker turns in a recording of several voices.

    Args:
        media: an audio or video file. Over a minute it runs as a job on the queue.
        speakers: how many different voices the recording holds (1 to 8).

    Returns:
        {"segments": [{"start", "end", "speaker"}]} in seconds, silence left out, speakers
        named "speaker 1", "speaker 2", ... in order of first appearance; and a timeline picture.
    """
    check({"speakers": speakers}, {"media": media})
    speakers = int(speakers)
    info = probe_audio(media)
    if info.duration_s is None or info.duration_s > vo.LONG_S:
        return start_job(engine, vo.DIARIZE_LONG, {"speakers": speakers}, {"media": media}, progress,
                         then=functools.partial(_shown_file, info.duration_s))
    samples = read_audio(media, vo.RATE, max_seconds=vo.LONG_S)
    with engine.run("diarize", bucket=seconds_bucket(samples.size / vo.RATE)) as run:
        result = vo.diarize(run.call, samples, speakers, vo.RATE)
    return result, timeline(result["segments"], info.duration_s or 0.0)


def _shown_file(duration_s: float | None, path: str):
    with open(path) as f:
        result = json.load(f)
    return result, timeline(result["segments"], duration_s or 0.0)


def build(engine: Engine) -> None:
    with gr.Tabs():
        with gr.Tab("Compare"):
            gr.Markdown("Two recordings of one person speaking each: are they the same voice? "
                        "The first minute of each is used.\n\n" + THRESHOLD_NOTE)
            with gr.Row():
                first = media_input("First voice (audio or video)")
                second = media_input("Second voice (audio or video)")
            go = run_button("Compare")
            verdict = gr.JSON(label="Similarity")
            on_click(engine, go, compare_voices, "compare the voices", [first, second], verdict,
                     api_name="compare_voices")
        with sub_tab("Speakers", "Who speaks when, in a conversation. Say how many voices there are. "
                     "Recordings over a minute run as a job and show on the Jobs tab.\n\n"
                     "How close: on real recordings of two people a turn's start or end lands about "
                     "0.2 s from where it is (the median); in a meeting of three or four, a voice "
                     "that says little is often given to someone else. Speech over speech goes to "
                     "one of the two."):
            with gr.Column():
                media = media_input("Audio or video")
                speakers = gr.Number(value=2, minimum=1, maximum=vo.MAX_SPEAKERS, step=1, precision=0,
                                     label="Speakers")
                run = run_button("Find speakers")
            with gr.Column():
                picture = gr.Image(label="Timeline", type="numpy", interactive=False)
                turns = gr.JSON(label="Segments")
            on_click_queued(engine, run, diarize, "find the speakers", [media, speakers], [turns, picture],
                            api_name="diarize")
