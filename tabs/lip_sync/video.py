"""Lip sync as resumable jobs (engine.media.video_job.process_video), for a video or a still
portrait; both make a video as long as the driving audio, which it carries.

As Wav2Lip's inference.py does it (docs/face_studio_facts.md §3): output frame i shows the lips for
the audio's mel window i (mel.py), on source frame i % (source frames): a video shorter than the
audio is cycled, a longer one cut, a still portrait held (at 25 fps). Two passes, each chunked:
1. the face: the one face detector over the source frames used, leased once per chunk; each
   chunk's boxes are written to the job's folder, so a resumed job skips the chunks done. The
   boxes are then padded and averaged over 5 frames, as Wav2Lip does before it generates.
2. the lips: process_video over the output frames, Wav2Lip leased once per chunk (and not at all
   for a chunk without a face); each chunk's segment is on disk before the checkpoint counts it.
Frames without a face pass through unchanged. One job kind per input, both on Wav2Lip's model, so
the queue runs them one after another while it is loaded (grouped by model).
"""
from __future__ import annotations

import contextlib
import json

import numpy as np

from analysers import face_align
from analysers.face_detector import FACE_DETECTOR
from engine import JobContext, JobKind, UserFacingError
from engine.files import atomic_write
from engine.media.image import read_image
from engine.media.video import probe, read_chunks, write_segment
from engine.media.video_job import chunk_frames_of, process_video

from . import mel as audio
from . import model as ls
from .manifest import WAV2LIP_GAN

VIDEO_JOB = "lip_sync_video:" + WAV2LIP_GAN.name
PHOTO_JOB = "lip_sync_photo:" + WAV2LIP_GAN.name
STILL_FPS = 25   # Wav2Lip's --fps default for a still image
NO_FACE = ("No face was found in this {what}, so there are no lips to move. Faces smaller than about "
           "20 pixels, or turned far away, are not found.")


def face_boxes(ctx: JobContext, source, used: int, chunk_frames: int, max_pixels: int | None) -> list:
    """The padded, smoothed box of the largest face in each of the first `used` source frames
    (None: no face). The detector is leased once per chunk; a chunk's raw boxes are kept in the
    job's folder (written whole or not at all), so a resumed job does not detect them again."""
    folder = ctx.work_dir / "faces"
    folder.mkdir(exist_ok=True)
    info = probe(source)
    raw: list = []
    # One decoding pass (cheap beside detection); chunks already kept are read back, not detected.
    with contextlib.closing(read_chunks(source, chunk_frames)) as chunks:
        for start, frames in chunks:
            if start >= used:
                break
            kept = folder / f"{start // chunk_frames:06d}.json"
            if kept.is_file():
                raw += json.loads(kept.read_text())
                continue
            ctx.check_cancelled()
            frames = frames[:used - start]
            found = ctx.call(FACE_DETECTOR, lambda d: [face_align.find_faces(d, f, max_pixels) for f in frames])
            boxes = [ls.padded_box(faces[0] if faces else None, info.height, info.width) for faces in found]
            with atomic_write(kept) as tmp:
                tmp.write_text(json.dumps(boxes))
            raw += boxes
            ctx.progress(0.0, f"finding the face: frame {start + len(frames)} of {used}")
    return ls.smooth(raw)


def lip_sync(ctx: JobContext, source, audio_path, what: str) -> str:
    """The whole job on a source video (a still portrait comes as a one-frame video)."""
    entry = WAV2LIP_GAN
    # Checked again here: the file may have gone since the job was queued.
    missing = ls.problem(ctx.spec(entry.name).loader.data_dir, entry)
    if missing:
        raise UserFacingError(missing)
    info = probe(source)
    mel, starts = audio.speech_windows(audio_path, info.fps)
    count = len(starts)
    chunk_frames = chunk_frames_of(ctx)
    if not ctx.checkpoint:   # fixed now: the face pass and process_video cut where the first attempt did
        ctx.save_checkpoint(chunk_frames=chunk_frames, chunks_done=0)
    used = min(info.frames, count)   # Wav2Lip: full_frames[:len(mel_chunks)]
    boxes = face_boxes(ctx, source, used, chunk_frames, ctx.spec(FACE_DETECTOR).max_pixels)
    if not any(boxes):
        raise UserFacingError(NO_FACE.format(what=what))
    used = len(boxes)   # fewer only where the decoder dropped damaged frames

    def transform(frames: np.ndarray, start: int) -> np.ndarray:
        picked = [boxes[(start + j) % used] for j in range(len(frames))]
        if not any(picked):
            return frames

        def sync_all(syncer) -> np.ndarray:
            return np.stack([ls.sync_frame(syncer, frame, box, audio.chunk(mel, starts[start + j]))
                             for j, (frame, box) in enumerate(zip(frames, picked))])
        return ctx.call(entry.name, sync_all)

    return str(process_video(ctx, source, transform, output_frames=count, audio_source=audio_path,
                             indexed=True))


def video_job(ctx: JobContext) -> str:
    """Job kind lip_sync_video:wav2lip-gan-96: inputs 'video' and 'audio'; params chunk_frames.
    The result is as long as the audio, at the video's size and fps, with the audio's sound."""
    return lip_sync(ctx, ctx.input("video"), ctx.input("audio"), "video")


def photo_job(ctx: JobContext) -> str:
    """Job kind lip_sync_photo:wav2lip-gan-96: inputs 'photo' and 'audio'. The portrait becomes a
    one-frame H.264 video in the job's folder (once: a resumed job reuses it), held at 25 fps."""
    still = ctx.work_dir / "still.mp4"
    if not still.is_file():
        photo = read_image(ctx.input("photo"), "photo")
        write_segment(photo[None], still, STILL_FPS)
    return lip_sync(ctx, still, ctx.input("audio"), "photo")


def job_kinds(check_video, check_photo) -> list[JobKind]:
    """The two kinds; each check(params, inputs) refuses at submit."""
    return [JobKind(VIDEO_JOB, WAV2LIP_GAN.name, video_job, check=check_video),
            JobKind(PHOTO_JOB, WAV2LIP_GAN.name, photo_job, check=check_photo)]

