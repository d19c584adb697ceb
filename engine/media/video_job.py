"""A video as a resumable job: decode in chunks, transform, encode each chunk to its own segment,
then join the segments and put the original audio back.

Memory holds one chunk at a time, whatever the video's length. A chunk counts as finished only
once its segment file is complete on disk; the checkpoint then records it, so a job killed at
any moment resumes from the first unfinished chunk and produces the same frames.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..jobs import JobContext
from .ffmpeg import TRUNCATED, MediaError
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


def process_video(ctx: JobContext, source: Path, transform: Callable[..., np.ndarray], *,
                  chunk_frames: int | None = None, result_name: str = "result.mp4",
                  output_frames: int | None = None, audio_source: Path | None = None,
                  indexed: bool = False) -> Path:
    """Run transform over the video chunk by chunk; the result file in the job's folder. A file
    that cannot be read or written fails the job with a MediaError in plain words.

    output_frames: make that many frames, output frame i from source frame i % (source frames):
    the source cycled when shorter, cut when longer, a one-frame source held (lip sync's rule).
    audio_source: the file whose first audio track the result carries instead of the source's.
    indexed: call transform(frames, start), start the index of the chunk's first output frame."""
    info = probe(source)
    chunk_frames = chunk_frames_of(ctx, chunk_frames)
    done = ctx.checkpoint.get("chunks_done", 0)
    if not ctx.checkpoint:
        ctx.save_checkpoint(chunk_frames=chunk_frames, chunks_done=0)
    count = info.frames if output_frames is None else output_frames
    total = max(1, math.ceil(count / chunk_frames))
    if done:
        ctx.resumed_from(done * chunk_frames)
    segments = ctx.work_dir / "segments"
    segments.mkdir(exist_ok=True)
    chunks = read_chunks(source, chunk_frames, start_frame=done * chunk_frames) if output_frames is None else \
        cycled_chunks(source, info.frames, chunk_frames, count, done * chunk_frames)
    for start, frames in chunks:
        ctx.check_cancelled()
        index = start // chunk_frames
        out = transform(frames, start) if indexed else transform(frames)
        # A transform may resize frames (upscaling) but must keep every frame, all one size.
        if out.ndim != 4 or len(out) != len(frames):
            raise RuntimeError(f"the transform turned frames {frames.shape} into {out.shape}")
        write_segment(out, segments / f"{index:06d}.mp4", info.fps)
        ctx.save_checkpoint(chunks_done=index + 1)
        # The last step (joining, audio) is the +1: 100% only when the file is there.
        ctx.progress((index + 1) / (total + 1), f"frame {start + len(frames)} of {count}")
    ctx.check_cancelled()
    result = ctx.work_dir / result_name
    parts = [segments / f"{i:06d}.mp4" for i in range(total)]
    audio = audio_source if audio_source is not None else (source if info.has_audio else None)
    concat_segments(parts, result, info.fps, audio_source=audio)
    return result


def cycled_chunks(source: Path, source_frames: int, chunk_frames: int, count: int, start_frame: int = 0
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the first output frame, uint8 [n, H, W, 3]) chunks of `count` output frames from
    start_frame on, output frame i being source frame i % source_frames. A source that fits in one
    chunk is decoded once and held; a longer one is decoded again at each wrap (one ffmpeg per pass,
    each pass at least a chunk long)."""
    held: list[np.ndarray] | None = None

    def source_from(first: int) -> Iterator[np.ndarray]:
        nonlocal held
        while True:
            if held is not None:
                yield from held[first:]
            else:
                decoded, got = [], 0
                for _, frames in read_chunks(source, chunk_frames, start_frame=first):
                    if source_frames <= chunk_frames and first == 0:
                        decoded.extend(frames)
                    got += len(frames)
                    yield from frames
                if not got and first == 0:   # nothing decodable: never spin on an empty pass
                    raise MediaError(TRUNCATED, "no frame decoded")
                if decoded:
                    held = decoded
            first = 0

    frames = source_from(start_frame % source_frames)
    try:
        for index in range(start_frame, count, chunk_frames):
            yield index, np.stack([next(frames) for _ in range(min(chunk_frames, count - index))])
    finally:
        frames.close()   # stops the decoder it is reading from
