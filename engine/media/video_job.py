"""A video as a resumable job: decode in chunks, transform, encode each chunk to its own segment,
then join the segments and put the original audio back.

Memory holds one chunk at a time, whatever the video's length. A chunk counts as finished only
once its segment file is complete on disk; the checkpoint then records it, so a job killed at
any moment resumes from the first unfinished chunk and produces the same frames.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from ..jobs import JobContext
from .video import concat_segments, probe, read_chunks, write_segment

# Frames per chunk, the unit of resumption, when neither the job's params nor the server's job
# defaults (launch.py --chunk-frames) set one.
CHUNK_FRAMES = 32


def readable_video(inputs: dict[str, Path]) -> None:
    """For a check of jobs on inputs["video"]: refuses at submit, with a MediaError, a file that
    is not a video (no video stream, a still picture, cut short before its first frame)."""
    probe(inputs["video"])


def chunk_frames_of(ctx: JobContext, requested: int | None = None) -> int:
    """The job's frames per chunk: fixed at its first attempt (a resumed job must cut where the
    first did), else the caller's, the job's params (with the server's defaults), or CHUNK_FRAMES."""
    return ctx.checkpoint.get("chunk_frames", requested or ctx.params.get("chunk_frames") or CHUNK_FRAMES)


def process_video(ctx: JobContext, source: Path, transform: Callable[[np.ndarray], np.ndarray], *,
                  chunk_frames: int | None = None, result_name: str = "result.mp4") -> Path:
    """Run transform over the video chunk by chunk; the result file in the job's folder. A file
    that cannot be read or written fails the job with a MediaError in plain words."""
    info = probe(source)
    chunk_frames = chunk_frames_of(ctx, chunk_frames)
    done = ctx.checkpoint.get("chunks_done", 0)
    if not ctx.checkpoint:
        ctx.save_checkpoint(chunk_frames=chunk_frames, chunks_done=0)
    total = max(1, math.ceil(info.frames / chunk_frames))
    if done:
        ctx.resumed_from(done * chunk_frames)
    segments = ctx.work_dir / "segments"
    segments.mkdir(exist_ok=True)
    for start, frames in read_chunks(source, chunk_frames, start_frame=done * chunk_frames):
        ctx.check_cancelled()
        index = start // chunk_frames
        out = transform(frames)
        # A transform may resize frames (upscaling) but must keep every frame, all one size.
        if out.ndim != 4 or len(out) != len(frames):
            raise RuntimeError(f"the transform turned frames {frames.shape} into {out.shape}")
        write_segment(out, segments / f"{index:06d}.mp4", info.fps)
        ctx.save_checkpoint(chunks_done=index + 1)
        # The last step (joining, audio) is the +1: 100% only when the file is there.
        ctx.progress((index + 1) / (total + 1), f"frame {start + len(frames)} of {info.frames}")
    ctx.check_cancelled()
    result = ctx.work_dir / result_name
    parts = [segments / f"{i:06d}.mp4" for i in range(total)]
    concat_segments(parts, result, info.fps, audio_source=source if info.has_audio else None)
    return result
