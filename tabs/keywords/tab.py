"""Keywords: where chosen words are spoken in an audio file or a video's sound (efficientword-net)."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import gradio as gr
import pandas as pd

from engine import Engine
from engine.costs import media_seconds
from engine.media.audio import probe_audio
from ui.components import media_input, microphone_for, on_click_queued, run_button
from ui.jobs import start_job

from . import check, keyword_names
from . import model as kw

COLUMNS = ["keyword", "start (s)", "end (s)", "score"]


def _paths(files) -> list[str]:
    """Uploaded files as paths (Gradio gives paths, or objects with .name, or nothing)."""
    if not files:
        return []
    files = files if isinstance(files, (list, tuple)) else [files]
    return [str(getattr(f, "name", f)) for f in files if f]


def spot_keywords(engine: Engine, media: str | None, keywords=("computer",), threshold: float = kw.THRESHOLD,
                  custom_name: str = "", custom_samples=None, step_s: float = kw.STEP_S, progress=gr.Progress()):
    """Find where keywords are spoken in an audio file or a video's soundtrack (EfficientWord-Net).

    Args:
        media: the audio file (WAV, MP3, M4A, OGG, FLAC...) or video file (MP4, MKV, WebM...).
        keywords: words to look for, from: alexa, balloon, computer, lights off, lights on,
            mobile, mycroft (a list, or text separated by commas). May be empty when
            custom_samples are given.
        threshold: similarity (0-1) from which a 1.5 s window counts as the keyword; 0.7 as
            the package's examples. Higher misses more, lower finds more false ones.
        custom_name: the name of your own keyword (used with custom_samples).
        custom_samples: 1 to 6 short recordings (at most 10 s each) of your own keyword spoken
            alone; it is found by its best match to any of them.
        step_s: how far each 1.5 s window moves on (0.25-0.75 s; 0.75 as the package).

    Returns:
        A table and JSON {"detections": [{"keyword", "start", "end", "score"}], "duration_s",
        "windows", "threshold", "step_s", "keywords"}, times in seconds. Works best on a
        keyword said on its own (a short pause around it), as a wake word is. Inputs over a
        minute run as a job.
    """
    names = keyword_names(keywords)
    samples = _paths(custom_samples)
    params = {"keywords": names, "threshold": float(threshold), "step_s": float(step_s),
              "custom_name": (custom_name or "").strip()}
    inputs = {"audio": media, **{f"sample_{i + 1}": p for i, p in enumerate(samples)}}
    check(params, inputs)
    duration = probe_audio(media).duration_s
    if duration is None or duration > kw.INTERACTIVE_MAX_S:
        return start_job(engine, kw.KEYWORDS_LONG, params, inputs, progress,
                         then=functools.partial(_shown_file, params["threshold"]))
    with engine.run("spot_keywords", bucket=kw.seconds_bucket(duration)) as run:
        chosen = kw.keywords_for(run.call, names, params["custom_name"], samples)
        result = kw.spot_file(run.call, media, chosen, params["threshold"], params["step_s"])
    return _shown(params["threshold"], result)


def _shown(threshold: float, result: dict):
    if not result["detections"]:
        gr.Info(f"None of {', '.join(result['keywords'])} was found above {threshold:g}.")
    rows = [[d["keyword"], d["start"], d["end"], d["score"]] for d in result["detections"]]
    return pd.DataFrame(rows, columns=COLUMNS), result


def _shown_file(threshold: float, path: str):
    return _shown(threshold, json.loads(Path(path).read_text()))


def run_bucket(media: str | None, *_options) -> str | None:
    """The size key spot_keywords's run opens with (its length, at most a chunk), for the cost line."""
    seconds = media_seconds(media) if media else None
    return kw.seconds_bucket(seconds) if seconds else None


def build(engine: Engine) -> None:
    gr.Markdown("Keywords found with EfficientWord-Net (a ResNet-50 comparing 1.5 s windows with examples "
                "of each word). It works best on a word said on its own, as a wake word is. Files up to a "
                "minute are answered at once; longer ones run as a job (Jobs tab).")
    with gr.Row():
        with gr.Column():
            media = media_input()
            microphone_for(media)
            keywords = gr.CheckboxGroup(kw.bundled_names(), value=["computer"], label="Keywords")
            with gr.Accordion("Your own keyword", open=False):
                custom_name = gr.Textbox(label="Its name", placeholder="e.g. hello wimmel")
                custom_samples = gr.File(label="1 to 6 short recordings of it, said alone", file_count="multiple",
                                         file_types=["audio", "video"], type="filepath")
            threshold = gr.Slider(0.5, 0.95, value=kw.THRESHOLD, step=0.01, label="Threshold")
            step = gr.Slider(0.25, 0.75, value=kw.STEP_S, step=0.05, label="Window step (s)",
                             info="smaller finds words on window edges, and takes longer")
            run = run_button("Find keywords")
        with gr.Column():
            table = gr.Dataframe(headers=COLUMNS, label="Found", interactive=False)
            details = gr.JSON(label="Details (JSON)", open=False)
    on_click_queued(engine, run, spot_keywords, "find the keywords",
                    [media, keywords, threshold, custom_name, custom_samples, step], [table, details],
                    api_name="spot_keywords", bucket=run_bucket)
