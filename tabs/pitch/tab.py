"""Pitch: the F0 curve of a voice or an instrument (swift-f0), its median as a note, and the held
notes, from an audio file, a video's sound or the microphone."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from ui.errors import user_errors
from ui.jobs import follow_job
from engine import Engine, UserFacingError
from engine.media.audio import MediaError, probe_audio
from tabs.pitch import model as pz

PLOT_POINTS = 4000  # a browser draws this many dots quickly; longer curves are thinned



def _curve(f0: list) -> pd.DataFrame:
    step = max(1, len(f0) // PLOT_POINTS)
    return pd.DataFrame(f0[::step], columns=["time (s)", "pitch (Hz)"])


def build(engine: Engine) -> None:
    def pitch(media: str | None, voicing: float = 0.5, progress=gr.Progress()):
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
        if not media:
            raise gr.Error("Upload an audio or video file first.")
        if not 0.0 < float(voicing) < 1.0:
            raise gr.Error("The voicing threshold must be between 0 and 1.")
        try:
            duration = probe_audio(media).duration_s
        except MediaError as exc:
            raise gr.Error(str(exc)) from exc
        if duration is None or duration > pz.INTERACTIVE_MAX_S:
            job_id = engine.jobs.submit("pitch_long", {"voicing": float(voicing)}, inputs={"audio": media})
            result = json.loads(Path(follow_job(engine, job_id, progress)).read_text())
        else:
            with user_errors("find the pitch"):
                try:
                    result = pz.pitch_file(engine, media, float(voicing))
                except UserFacingError as exc:
                    raise gr.Error(str(exc)) from exc
        if result["median_hz"] is None:
            gr.Info("No voiced frames: the audio holds no clear pitch (silence, noise or whispering).")
        return _curve(result["f0"]), result

    gr.Markdown("Pitch of a voice or an instrument every 16 ms with SwiftF0 (47 - 2094 Hz). Files up to "
                "a minute are answered at once; longer ones run as a job (Jobs tab).")
    with gr.Row():
        with gr.Column():
            media = gr.File(label="Audio or video file", file_types=["audio", "video"], type="filepath")
            mic = gr.Audio(label="Or record", sources=["microphone"], type="filepath", format="wav")
            voicing = gr.Slider(0.1, 0.9, value=0.5, step=0.05, label="Voicing threshold",
                                info="lower keeps less certain frames (pure low tones need ~0.4)")
            run = gr.Button("Find the pitch", variant="primary")
        with gr.Column():
            plot = gr.ScatterPlot(x="time (s)", y="pitch (Hz)", label="Pitch over time", height=300)
            details = gr.JSON(label="Median, F0 and notes (JSON)", open=False)
    mic.stop_recording(lambda path: path, mic, media, api_visibility="private", show_progress="hidden")
    run.click(pitch, [media, voicing], [plot, details], api_name="pitch", concurrency_limit=None)
