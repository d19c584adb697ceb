"""Hands in a video, as a job: every frame's hands drawn on it, and the landmarks of every frame
written beside the video as JSON and CSV.

Each frame is processed on its own (palm detector, then landmarks per hand), without MediaPipe's
tracking (its video mode crops the next frame where the last landmarks were): a job resumed at
its first unfinished chunk then writes exactly what an uninterrupted run would. Each chunk's
landmarks are saved with its segment, and joined at the end.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from engine import JobContext
from engine.media.video import probe
from engine.media.video_job import chunk_frames_of, process_video

from . import geometry as geo
from .model import HANDS_MODEL, check_threshold, find_hands, hand_json
from .skeleton import draw_hands

HANDS_JSON, HANDS_CSV = "hands.json", "hands.csv"
CSV_COLUMNS = ["frame", "time_s", "hand", "handedness", "gesture", "score", "presence", "name", "x", "y", "z"]


def write_hands(frames: list[dict], folder: Path, fps: float, size: tuple[int, int]) -> tuple[Path, Path]:
    """hands.json ({"fps", "width", "height", "frames": [{"frame", "time_s", "hands"}]}) and
    hands.csv (a row per frame, hand and landmark) in `folder`."""
    folder = Path(folder)
    as_json, as_csv = folder / HANDS_JSON, folder / HANDS_CSV
    as_json.write_text(json.dumps({"fps": fps, "width": size[0], "height": size[1], "frames": frames}))
    with as_csv.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for frame in frames:
            for n, hand in enumerate(frame["hands"], 1):
                for k in hand["keypoints"]:
                    out.writerow([frame["frame"], frame["time_s"], n, hand["handedness"], hand["gesture"] or "",
                                  hand["score"], hand["presence"], k["name"], k["x"], k["y"], k["z"]])
    return as_json, as_csv


def video_job(ctx: JobContext) -> str:
    """Job kind hands_video: params min_score (the palm detector's threshold, default 0.5),
    chunk_frames; input 'video'. The result is the drawn video; hands.json and hands.csv lie
    beside it."""
    min_score = check_threshold(ctx.params.get("min_score", geo.MIN_SCORE))
    source = ctx.input("video")
    info = probe(source)
    fps = float(info.fps)
    chunk_frames = chunk_frames_of(ctx)
    parts = ctx.work_dir / "hands"
    parts.mkdir(exist_ok=True)
    chunk = [ctx.checkpoint.get("chunks_done", 0)]   # the index of the chunk transform gets next

    def transform(frames: np.ndarray) -> np.ndarray:
        # One lease per chunk: interactive calls get the model between chunks.
        found = ctx.call(HANDS_MODEL, lambda model: [find_hands(model, frame, min_score) for frame in frames])
        first = chunk[0] * chunk_frames
        entries = [{"frame": first + i, "time_s": round((first + i) / fps, 4), "hands": [hand_json(h) for h in hands]}
                   for i, hands in enumerate(found)]
        (parts / f"{chunk[0]:06d}.json").write_text(json.dumps(entries))
        chunk[0] += 1
        return np.stack([draw_hands(frame, hands, boxes=False) for frame, hands in zip(frames, found)])

    result = process_video(ctx, source, transform, chunk_frames=chunk_frames)
    frames = [entry for part in sorted(parts.glob("*.json")) for entry in json.loads(part.read_text())]
    write_hands(frames, result.parent, fps, (info.width, info.height))
    return str(result)


def hand_files(result: str | Path) -> list[str]:
    """The landmark files beside a finished job's video."""
    folder = Path(result).parent
    return [str(folder / name) for name in (HANDS_JSON, HANDS_CSV) if (folder / name).exists()]
