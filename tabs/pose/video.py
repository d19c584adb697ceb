"""Body pose in a video, as a job: every frame's poses drawn on it, and the keypoints of every
frame written beside the video as JSON and CSV.

Each frame is processed on its own (detector, then landmarks per person), with none of
MediaPipe's tracking between frames (its video mode crops the next frame where the last
landmarks were, and smooths them): a job resumed at its first unfinished chunk then writes
exactly the frames and keypoints an uninterrupted run would. Each chunk's keypoints are saved
with its segment, and joined at the end.
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
from .model import POSE_MODEL, check_threshold, find_poses, pose_json
from .skeleton import draw_poses

KEYPOINTS_JSON, KEYPOINTS_CSV = "keypoints.json", "keypoints.csv"
CSV_COLUMNS = ["frame", "time_s", "person", "score", "name", "x", "y", "z", "visibility", "presence"]


def _frame_entry(index: int, fps: float, poses: list[dict]) -> dict:
    return {"frame": index, "time_s": round(index / fps, 4), "people": [pose_json(p) for p in poses]}


def write_keypoints(frames: list[dict], folder: Path, fps: float, size: tuple[int, int]) -> tuple[Path, Path]:
    """keypoints.json ({"fps", "width", "height", "frames": [{"frame", "time_s", "people"}]}) and
    keypoints.csv (a row per frame, person and landmark) in `folder`."""
    folder = Path(folder)
    as_json, as_csv = folder / KEYPOINTS_JSON, folder / KEYPOINTS_CSV
    as_json.write_text(json.dumps({"fps": fps, "width": size[0], "height": size[1], "frames": frames}))
    with as_csv.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for frame in frames:
            for n, person in enumerate(frame["people"], 1):
                for k in person["keypoints"]:
                    out.writerow([frame["frame"], frame["time_s"], n, person["score"], k["name"], k["x"], k["y"],
                                  k["z"], k["visibility"], k["presence"]])
    return as_json, as_csv


def video_job(ctx: JobContext) -> str:
    """Job kind body_pose_video: params min_score (the detector's threshold, default 0.5),
    chunk_frames; input 'video'. The result is the drawn video; keypoints.json and keypoints.csv
    lie beside it."""
    min_score = check_threshold(ctx.params.get("min_score", geo.MIN_SCORE))
    source = ctx.input("video")
    info = probe(source)
    fps = float(info.fps)
    chunk_frames = chunk_frames_of(ctx)
    parts = ctx.work_dir / "keypoints"
    parts.mkdir(exist_ok=True)
    chunk = [ctx.checkpoint.get("chunks_done", 0)]   # the index of the chunk transform gets next

    def transform(frames: np.ndarray) -> np.ndarray:
        # One lease per chunk, for the nets and their small crops: interactive calls get the model between chunks.
        poses = ctx.call(POSE_MODEL, lambda model: [find_poses(model, frame, min_score) for frame in frames])
        first = chunk[0] * chunk_frames
        entries = [_frame_entry(first + i, fps, found) for i, found in enumerate(poses)]
        (parts / f"{chunk[0]:06d}.json").write_text(json.dumps(entries))
        chunk[0] += 1
        return np.stack([draw_poses(frame, found, boxes=False) for frame, found in zip(frames, poses)])

    result = process_video(ctx, source, transform, chunk_frames=chunk_frames)
    frames = [entry for part in sorted(parts.glob("*.json")) for entry in json.loads(part.read_text())]
    write_keypoints(frames, result.parent, fps, (info.width, info.height))
    return str(result)


def keypoint_files(result: str | Path) -> list[str]:
    """The keypoint files beside a finished job's video."""
    folder = Path(result).parent
    return [str(folder / name) for name in (KEYPOINTS_JSON, KEYPOINTS_CSV) if (folder / name).exists()]
