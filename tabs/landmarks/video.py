"""Face landmarks in a video, as a job: every frame drawn with its faces' meshes, irises and
poses, and the per-frame values written beside the video as CSV (a row per frame and face).

Each frame is processed on its own (detector, then mesh and irises per face), with none of
MediaPipe's tracking between frames: a job resumed at its first unfinished chunk writes exactly
the frames and rows an uninterrupted run would. Each chunk's rows are saved with its segment and
joined at the end.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from analysers.face_detector import FACE_DETECTOR
from engine import JobContext
from engine.media.video import probe
from engine.media.video_job import chunk_frames_of, process_video

from .faces import describe_face, detect, draw
from .model import FACE_MESH, face_landmarks

VALUES_CSV = "landmarks.csv"
CSV_COLUMNS = ["frame", "time_s", "face", "x1", "y1", "x2", "y2", "score", "yaw", "pitch", "roll",
               "left_eye_openness", "right_eye_openness", "gaze_horizontal", "gaze_vertical",
               "left_iris_x", "left_iris_y", "right_iris_x", "right_iris_y"]


def csv_rows(index: int, fps: float, faces: list[dict]) -> list[list]:
    """One frame's rows: a row per face, in the detector's order (best score first)."""
    rows = []
    for n, face in enumerate(faces, 1):
        pose, eyes, gaze, irises = face["head_pose"], face["eye_openness"], face["gaze"], face["irises"]
        rows.append([index, round(index / fps, 4), n, *face["box"], face["score"], pose["yaw"], pose["pitch"],
                     pose["roll"], eyes["left"], eyes["right"], gaze["horizontal"], gaze["vertical"],
                     *irises["left"]["centre"], *irises["right"]["centre"]])
    return rows


def frame_faces(detector_call, mesh_call, frames: np.ndarray, max_pixels: int | None) -> list[tuple[list, list]]:
    """Per frame: (faces as JSON, raw results): the detector leased once for the chunk, the mesh once."""
    faces = detector_call(lambda detector: [detect(detector, frame, max_pixels) for frame in frames])
    found = mesh_call(lambda marker: [[face_landmarks(marker, frame, f) for f in fs] for frame, fs in zip(frames, faces)])
    out = []
    for frame, fs, ls in zip(frames, faces, found):
        height, width = frame.shape[:2]
        pairs = [(f, r) for f, r in zip(fs, ls) if r is not None]
        out.append(([describe_face(f, r, width, height) for f, r in pairs], [r for _, r in pairs]))
    return out


def video_job(ctx: JobContext) -> str:
    """Job kind face_landmarks_video: params chunk_frames; input 'video'. The result is the drawn
    video; landmarks.csv lies beside it."""
    source = ctx.input("video")
    fps = float(probe(source).fps)
    max_pixels = ctx.spec(FACE_DETECTOR).max_pixels
    chunk_frames = chunk_frames_of(ctx)
    parts = ctx.work_dir / "values"
    parts.mkdir(exist_ok=True)
    chunk = [ctx.checkpoint.get("chunks_done", 0)]   # the index of the chunk transform gets next

    def transform(frames: np.ndarray) -> np.ndarray:
        # One lease per model and chunk: interactive calls get the models between chunks.
        per_frame = frame_faces(lambda fn: ctx.call(FACE_DETECTOR, fn), lambda fn: ctx.call(FACE_MESH, fn),
                                frames, max_pixels)
        first = chunk[0] * chunk_frames
        rows = [row for i, (faces, _) in enumerate(per_frame) for row in csv_rows(first + i, fps, faces)]
        (parts / f"{chunk[0]:06d}.json").write_text(json.dumps(rows))
        chunk[0] += 1
        return np.stack([draw(frame, faces, raw) for frame, (faces, raw) in zip(frames, per_frame)])

    result = process_video(ctx, source, transform, chunk_frames=chunk_frames)
    with (result.parent / VALUES_CSV).open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for part in sorted(parts.glob("*.json")):
            out.writerows(json.loads(part.read_text()))
    return str(result)


def values_file(result: str | Path) -> str | None:
    """The CSV beside a finished job's video."""
    path = Path(result).parent / VALUES_CSV
    return str(path) if path.exists() else None
