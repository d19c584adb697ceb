"""Pitch: the F0 curve of a voice or an instrument (swift-f0), its median as a note, and the held
notes, from an audio file, a video's sound or the microphone."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from engine import Engine
from engine.media.audio import probe_audio
from ui.components import media_input, microphone_for, on_click_queued, run_button
from ui.jobs import start_job

from . import check
from . import model as pz

PLOT_POINTS = 4000  # a browser draws this many dots quickly; longer curves are thinned


def _curve(f0: list) -> pd.DataFrame:
    step = max(1, len(f0) // PLOT_POINTS)
    return pd.DataFrame(f0[::step], columns=["time (s)", "pitch (Hz)"])


def pitch(engine: Engine, media: str | None, voicing: float = 0.5, progress=gr.Progress()):
    """The pitch (fundamental frequency) of a voice or instrument over time (swift-f0).

    Args:
        media: the audio file (WAV, MP3, M4A, OGG, FLAC...) or video file (MP4, MKV, WebM...).
        voicing: confidence (0-1) from which a 16 ms frame counts as voiced. 0.5 is the model's
            calibration; pure sine tones under ~300 Hz score about 0.45 and need 0.4.

    Returns:
        A plot of the pitch of every voiced frame over time; JSON {"median_hz" (null when
        nothing is voiced), "median_note" (e.g. "A3"), "voiced_s", "f0": [[t, hz], ...]
        (voiced frames only), "notes": [{"start", "end", "hz", "note"}] (held notes)}.
        Pitch range 47-2094 Hz. Inputs over a minute run as a job.
    """
    check({"voicing": voicing}, {"audio": media})
    duration = probe_audio(media).duration_s
    if duration is None or duration > pz.INTERACTIVE_MAX_S:
        return start_job(engine, pz.PITCH_LONG, {"voicing": float(voicing)}, {"audio": media}, progress,
                         then=_shown_file)
    with engine.run("pitch", bucket=pz.seconds_bucket(duration)) as run:
        result = pz.pitch_file(run.call, media, float(voicing))
    return _shown(result)


def _shown_file(path: str):
    return _shown(json.loads(Path(path).read_text()))


def _shown(result: dict):
    if result["median_hz"] is None:
        gr.Info("No voiced frames: the audio holds no clear pitch (silence, noise or whispering).")
    return _curve(result["f0"]), result


def build(engine: Engine) -> None:
    gr.Markdown("Pitch of a voice or an instrument every 16 ms with SwiftF0 (47 - 2094 Hz). Files up to "
                "a minute are answered at once; longer ones run as a job (Jobs tab).")
    with gr.Row():
        with gr.Column():
            media = media_input()
            microphone_for(media)
            voicing = gr.Slider(0.1, 0.9, value=0.5, step=0.05, label="Voicing threshold",
                                info="lower keeps less certain frames (pure low tones need ~0.4)")
            run = run_button("Find the pitch")
        with gr.Column():
            plot = gr.ScatterPlot(x="time (s)", y="pitch (Hz)", label="Pitch over time", height=300)
            details = gr.JSON(label="Median, F0 and notes (JSON)", open=False)
    on_click_queued(engine, run, pitch, "find the pitch", [media, voicing], [plot, details], api_name="pitch")
