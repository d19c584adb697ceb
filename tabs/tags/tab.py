"""Music tags: the piece's best tags, and the tags over time (every 3 s), with musicnn."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from engine import Engine
from engine.costs import media_seconds
from engine.media.audio import probe_audio
from ui.components import media_input, microphone_for, on_click_queued, run_button
from ui.jobs import start_job

from . import check
from . import model as tg

CURVES = 5  # tags drawn over time: the piece's best ones
TIME_COLUMNS = ["start (s)", "end (s)", "top tags"]


def over_time(result: dict, tags: int = CURVES) -> pd.DataFrame:
    """Long-form rows (time, tag, score) of the piece's best `tags` per 3 s patch, for a line plot;
    time is each patch's middle."""
    index = {name: i for i, name in enumerate(result["labels"])}
    best = [t["tag"] for t in result["tags"][:tags]]
    rows = [[round((p["start"] + p["end"]) / 2, 3), tag, p["scores"][index[tag]]]
            for p in result["taggram"] for tag in best]
    return pd.DataFrame(rows, columns=["time (s)", "tag", "score"])


def patch_table(result: dict, per_patch: int = 3) -> pd.DataFrame:
    """One row per 3 s patch: its time and its best `per_patch` tags with scores."""
    names, rows = result["labels"], []
    for p in result["taggram"]:
        order = sorted(range(len(names)), key=lambda i: -p["scores"][i])[:per_patch]
        rows.append([p["start"], p["end"], ", ".join(f"{names[i]} {p['scores'][i]:.2f}" for i in order)])
    return pd.DataFrame(rows, columns=TIME_COLUMNS)


def tag_music(engine: Engine, media: str | None, top: int = tg.TOP, progress=gr.Progress()):
    """Tag a piece of music: genres (jazz, rock, electronic, Hip-Hop...), eras (60s-00s), moods
    (chill, happy, sad...) and voices (female / male vocalists), with musicnn trained on the
    Million Song Dataset's 50 most used tags.

    Args:
        media: the audio file (WAV, MP3, M4A, OGG, FLAC...) or video file (MP4, MKV, WebM...),
            at least 1 s long; pieces under 3 s are repeated to 3 s, as the model was trained.
        top: how many of the piece's best tags to list (1-50).

    Returns:
        The best tags with their scores (0-1, the mean over 3 s patches; tags are not exclusive,
        a score of 0.3 is already a clear tag); the best 5 over time; a table of each 3 s
        patch's best tags; JSON {"tags": [{"tag", "score"}], "duration_s", "patch_s",
        "repeat_padded", "labels" (all 50), "taggram": [{"start", "end", "scores" (50, in
        labels' order)}]}. Pieces over 5 minutes run as a job.
    """
    params = {"top": int(top) if isinstance(top, float) and float(top).is_integer() else top}
    check(params, {"audio": media})
    duration = probe_audio(media).duration_s
    if duration is None or duration > tg.INTERACTIVE_MAX_S:
        return start_job(engine, tg.TAGS_LONG, params, {"audio": media}, progress, then=_shown_file)
    with engine.run("tag_music", bucket=tg.seconds_bucket(duration)) as run:
        result = tg.tag_file(run.call, media, params["top"])
    return _shown(result)


def _shown(result: dict):
    best = {t["tag"]: t["score"] for t in result["tags"]}
    return best, over_time(result), patch_table(result), result


def _shown_file(path: str):
    return _shown(json.loads(Path(path).read_text()))


def run_bucket(media: str | None, *_options) -> str | None:
    """The size key tag_music's run opens with (its length, at most a chunk), for the cost line."""
    seconds = media_seconds(media) if media else None
    return tg.seconds_bucket(seconds) if seconds else None


def build(engine: Engine) -> None:
    gr.Markdown("Tags of a piece of music with musicnn (trained on the Million Song Dataset): genres, eras, "
                "moods and voices, for the whole piece (the mean over 3 s patches) and every 3 s. Tags are "
                "not exclusive: a piece can be rock and 80s and guitar. Pieces up to 5 minutes are answered "
                "at once; longer ones run as a job (Jobs tab).")
    with gr.Row():
        with gr.Column():
            media = media_input()
            microphone_for(media)
            top = gr.Slider(1, 50, value=tg.TOP, step=1, label="Tags to list")
            run = run_button("Tag the music")
        with gr.Column():
            best = gr.Label(label="Best tags (the whole piece)", num_top_classes=50)
            curves = gr.LinePlot(x="time (s)", y="score", color="tag", label="Best tags over time", height=300)
    table = gr.Dataframe(headers=TIME_COLUMNS, label="Every 3 s", interactive=False)
    details = gr.JSON(label="Details (JSON)", open=False)
    on_click_queued(engine, run, tag_music, "tag the music", [media, top], [best, curves, table, details],
                    api_name="tag_music", bucket=run_bucket)
