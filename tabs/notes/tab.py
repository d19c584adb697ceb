"""Notes (audio to MIDI): the notes played in music (Basic Pitch), as a table, a MIDI file and a
piano roll."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from engine import Engine
from engine.costs import media_seconds
from engine.media.audio import probe_audio
from ui.components import image_output, media_input, microphone_for, on_click_queued, run_button
from ui.jobs import start_job
from ui.outputs import new_output_dir

from . import check
from . import decode
from . import model as nm
from .roll import piano_roll

COLUMNS = ["start (s)", "end (s)", "note", "pitch (MIDI)", "velocity"]


def transcribe_notes(engine: Engine, media: str | None, onset_threshold: float = decode.ONSET_THRESHOLD,
                     frame_threshold: float = decode.FRAME_THRESHOLD, min_note_ms: float = decode.MIN_NOTE_MS,
                     progress=gr.Progress()):
    """The notes played in music: audio to MIDI with Spotify's Basic Pitch (polyphonic, any instrument).

    Args:
        media: the audio file (WAV, MP3, M4A, OGG, FLAC...) or video file (MP4, MKV, WebM...).
        onset_threshold: how sure (0-1) the model must be that a note starts; 0.5 as Basic Pitch.
            Lower finds more notes, and more false ones.
        frame_threshold: how strong (0-1) a note must stay to go on sounding; 0.3 as Basic Pitch.
            Lower makes longer notes, and more of them.
        min_note_ms: notes shorter than this (milliseconds, 0-2000) are dropped; 127.7 as Basic Pitch.

    Returns:
        A table of the notes; the MIDI file (.mid); a piano roll (time across, pitch up); and
        JSON {"notes": [{"start", "end" (seconds), "pitch" (MIDI number, 60 = C4), "note"
        (e.g. "A4"), "velocity" (1-127), "bends" (pitch bend per 11.6 ms frame in thirds of a
        semitone, null where notes overlap)}], "duration_s", "onset_threshold",
        "frame_threshold", "min_note_ms"}. Inputs over a minute run as a job.
    """
    params = {"onset_threshold": float(onset_threshold), "frame_threshold": float(frame_threshold),
              "min_note_ms": float(min_note_ms)}
    check(params, {"audio": media})
    duration = probe_audio(media).duration_s
    if duration is None or duration > nm.INTERACTIVE_MAX_S:
        return start_job(engine, nm.NOTES_LONG, params, {"audio": media}, progress, then=_shown_file)
    with engine.run("transcribe_notes", bucket=nm.seconds_bucket(duration)) as run:
        result = nm.transcribe_file(run.call, media, params)
    _, midi = nm.save(result, new_output_dir("notes"))
    return _shown(result, midi)


def _shown_file(path: str):
    return _shown(json.loads(Path(path).read_text()), Path(path).with_name("notes.mid"))


def _shown(result: dict, midi: Path):
    if not result["notes"]:
        gr.Info("No notes found: the audio holds no clear pitched sound (silence, speech-like noise), "
                "or the thresholds are too high.")
    rows = [[n["start"], n["end"], n["note"], n["pitch"], n["velocity"]] for n in result["notes"]]
    return (pd.DataFrame(rows, columns=COLUMNS), str(midi),
            piano_roll(result["notes"], result["duration_s"]), result)


def run_bucket(media: str | None, *_options) -> str | None:
    """The size key transcribe_notes's run opens with (its length, at most a chunk), for the cost line."""
    seconds = media_seconds(media) if media else None
    return nm.seconds_bucket(seconds) if seconds else None


def build(engine: Engine) -> None:
    gr.Markdown("The notes played in music, with Spotify's Basic Pitch (any instrument, chords too, "
                "A0 to C8), as a table, a MIDI file and a piano roll. Files up to a minute are answered "
                "at once; longer ones run as a job (Jobs tab).")
    with gr.Row():
        with gr.Column():
            media = media_input()
            microphone_for(media)
            onset = gr.Slider(0.05, 0.95, value=decode.ONSET_THRESHOLD, step=0.05, label="Onset threshold",
                              info="how sure a note must be to start: lower finds more notes")
            frame = gr.Slider(0.05, 0.95, value=decode.FRAME_THRESHOLD, step=0.05, label="Frame threshold",
                              info="how strong a note must stay: lower makes longer notes")
            min_ms = gr.Slider(0, 500, value=decode.MIN_NOTE_MS, step=1, label="Shortest note (ms)")
            run = run_button("Find the notes")
        with gr.Column():
            roll = image_output("Piano roll")
            midi = gr.File(label="MIDI file", interactive=False)
            table = gr.Dataframe(headers=COLUMNS, label="Notes", interactive=False)
            details = gr.JSON(label="Notes and pitch bends (JSON)", open=False)
    on_click_queued(engine, run, transcribe_notes, "find the notes", [media, onset, frame, min_ms],
                    [table, midi, roll, details], api_name="transcribe_notes", bucket=run_bucket)
