"""Speech to text for inputs over a minute: the job `transcribe_long`.

The audio streams in, is cut at the quietest moment of each 30 s window (one Whisper window per
piece, and no word cut in half), and each piece's segments are saved before the checkpoint moves
on, so a restarted job resumes after its last finished piece.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine import JobContext
from engine.files import write_json
from engine.media.audio import probe_audio, stream_audio

from .model import SAMPLE_RATE, WHISPER, join_text, run_whisper, subtitled_video, write_outputs

# Whisper sees 30 s at a time, so a piece of at most 30 s costs one encoder pass; cutting in its
# last third leaves room to find a pause.
WINDOW_S = 30.0
EARLIEST_CUT_S = 20.0
READ_S = 10.0  # how much audio is decoded per read; memory holds about WINDOW_S + READ_S
PROMPT_CHARS = 200  # the previous piece's last words, given to Whisper to carry style across a cut

def quiet_cut(samples: np.ndarray, earliest: int) -> int:
    """Where to cut `samples` (an index >= earliest): the middle of the longest stretch within
    3 dB of the quietest 200 ms after `earliest`. Depends only on the samples, so a resumed job
    cuts exactly where the first attempt did."""
    hop = SAMPLE_RATE // 100  # 10 ms frames
    tail = samples[earliest:]
    frames = tail[: tail.size // hop * hop].reshape(-1, hop)
    if len(frames) < 2:
        return samples.size
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    window = min(20, len(energy))
    smooth = np.convolve(energy, np.ones(window) / window, mode="valid")
    level = 10 * np.log10(smooth + 1e-10)
    quiet = level <= level.min() + 3.0
    best_start, best_len, start = 0, 0, None
    for i, q in enumerate(np.append(quiet, False)):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = None
    centre = best_start + best_len // 2 + window // 2  # the smoothing window's middle
    return earliest + centre * hop


def _pieces(path, start_sample: int, read_s: float, window_s: float, earliest_s: float):
    """Yield (first sample, piece) from `start_sample` on: pieces of at most window_s, each cut at
    a pause after earliest_s (the last piece is whatever is left)."""
    window, earliest = int(window_s * SAMPLE_RATE), int(earliest_s * SAMPLE_RATE)
    buffer, first = np.zeros(0, np.float32), start_sample
    for _start, chunk in stream_audio(path, SAMPLE_RATE, read_s, start_s=start_sample / SAMPLE_RATE):
        buffer = np.concatenate([buffer, chunk])
        while buffer.size >= window:
            # Decided on exactly one window of samples from the piece's start, whatever the read
            # sizes were: an uninterrupted run and a resumed one cut at the same places.
            cut = quiet_cut(buffer[:window], earliest)
            yield first, buffer[:cut]
            buffer, first = buffer[cut:], first + cut
    if buffer.size:
        yield first, buffer


def _piece_file(ctx: JobContext, index: int) -> Path:
    return ctx.work_dir / "pieces" / f"{index:06d}.json"


def long_job(ctx: JobContext) -> str:
    """Job kind transcribe_long: input 'media' (audio, or a video's soundtrack); params timestamps
    ('segment' or 'word'), burn (bool, video only). Writes transcript.txt/.srt/.vtt/.json (and
    subtitled.mp4 for a video) in the job folder; the result is transcript.srt."""
    source = ctx.input("media")
    timestamps = ctx.params.get("timestamps", "segment")  # checked at submit
    info = probe_audio(source)
    # Fixed at the first attempt, like process_video's chunk size: a resume cuts where it did.
    layout = {"window_s": WINDOW_S, "earliest_s": EARLIEST_CUT_S, "read_s": READ_S}
    layout = {k: ctx.checkpoint.get(k, v) for k, v in layout.items()}
    next_sample, pieces = ctx.checkpoint.get("next_sample", 0), ctx.checkpoint.get("pieces", 0)
    if not ctx.checkpoint:
        ctx.save_checkpoint(**layout, next_sample=0, pieces=0)
    if next_sample:
        ctx.resumed_from(next_sample / SAMPLE_RATE, "s")
    total = max(1, int((info.duration_s or 0) * SAMPLE_RATE))
    (ctx.work_dir / "pieces").mkdir(exist_ok=True)
    prompt = None
    if pieces:
        previous = json.loads(_piece_file(ctx, pieces - 1).read_text())
        prompt = join_text(previous)[-PROMPT_CHARS:] or None
    # closing(): a cancelled job stops the ffmpeg reader at once, not when garbage is collected.
    with contextlib.closing(_pieces(source, next_sample, layout["read_s"], layout["window_s"],
                                    layout["earliest_s"])) as stream:
        for first, piece in stream:
            ctx.check_cancelled()
            offset = first / SAMPLE_RATE
            # One lease per piece: interactive transcriptions get the model in between.
            segments = ctx.call(WHISPER, lambda model: run_whisper(model, piece, prompt, offset))
            write_json(_piece_file(ctx, pieces), segments)
            pieces, next_sample = pieces + 1, first + piece.size
            ctx.save_checkpoint(next_sample=next_sample, pieces=pieces)
            # Writing the files is the last step: 100% only once they are there.
            ctx.progress(0.95 * min(1.0, next_sample / total),
                         f"{next_sample / SAMPLE_RATE:.0f} s of {total / SAMPLE_RATE:.0f} s transcribed")
            prompt = join_text(segments)[-PROMPT_CHARS:] or None  # as a resume computes it
    ctx.check_cancelled()
    segments = [s for i in range(pieces) for s in json.loads(_piece_file(ctx, i).read_text())]
    transcript = {"text": join_text(segments), "segments": segments}
    paths = write_outputs(transcript, ctx.work_dir, timestamps)
    if info.has_video:
        ctx.progress(0.96, "putting the subtitles into the video")
        subtitled_video(source, paths["srt"], ctx.work_dir / "subtitled.mp4", bool(ctx.params.get("burn")))
    return str(paths["srt"])


def job_outputs(result: str | os.PathLike) -> dict[str, Any]:
    """The files a finished transcribe_long job left beside its result: text, srt, vtt, json,
    and video (None for audio input)."""
    folder = Path(result).parent
    video = folder / "subtitled.mp4"
    return {"text": folder / "transcript.txt", "srt": folder / "transcript.srt",
            "vtt": folder / "transcript.vtt", "json": folder / "transcript.json",
            "video": video if video.is_file() else None}
