"""Notes from music with Spotify's Basic Pitch (basic-pitch 0.4.0, Apache-2.0): its ICASSP 2022
network (saved_models/icassp_2022/nmp.onnx, 230 KB) on ONNX Runtime, with our own windowing and
our port of its note creation (decode.py); the package itself pins TensorFlow and is installed
--no-deps for the file only (importing it would only warn that TensorFlow is missing).

The network (facts from basic_pitch/constants.py and inference.py): 22050 Hz mono in windows of
AUDIO_N_SAMPLES = 2 s - 256 = 43844 samples, each giving 172 frames (one per FFT_HOP = 256
samples) of three outputs: note [172, 88], onset [172, 88] and contour [172, 264]. Windows overlap
by 30 frames and the stitch drops 15 at each side of each window, the first window starting 15
frames (3840 zeros) before the audio. The package steps windows by 43844 - 30 * 256 = 36164
samples (141.27 frames) and corrects the drift that leaves with a per-window time offset and a
"magic number" (note_creation.model_frames_to_time); we step by the 142 frames each window keeps
(36352 samples), so output frame n is exactly the audio at n * 256 samples in every window. The
first window's frames are the package's; later windows see the audio 8.5 ms a window later than
the package's do, so the notes differ a little: on sax.wav 55 of our 60 notes (the package: 57),
on cantina.wav 22 of 24 (26) match one of the package's in pitch, start (30 ms) and end (50 ms).

Long audio (a job) goes in chunks of CHUNK_WINDOWS windows on that same grid, streamed by one
ffmpeg process, so each chunk's frames are those of one pass; notes are found on the chunk with
MARGIN_WINDOWS more on each side, and a chunk keeps the notes that start in it. A note longer
than the margin (6.6 s) that crosses a chunk edge is cut at the margin's end, and the package's
inferred-onset scaling (to the onsets' maximum) is per chunk; on 80 s of saxophone the job's
notes are exactly those of one pass (tests/test_notes.py).
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from engine import Call, JobContext, ModelSpec
from engine.files import write_json
from engine.media.audio import probe_audio, read_audio, stream_audio
from engine.package_files import package_folder, reason_if_missing
from engine.predict import seconds_bucket as seconds_key
from engine.runtimes import onnx_runtime

from . import decode
from .midi import write_midi

MiB = 1024**2
NOTES_MODEL = "basic-pitch"
NOTES_LONG = "transcribe_notes_long"
SAMPLE_RATE = 22050       # constants.AUDIO_SAMPLE_RATE
HOP = 256                 # constants.FFT_HOP
WINDOW = 43844            # constants.AUDIO_N_SAMPLES = 22050 * 2 - 256
EDGE = 15                 # inference.run_inference: 30 overlapping frames, unwrap_output drops half at each side
KEEP = 172 - 2 * EDGE     # frames each window gives (constants.ANNOT_N_FRAMES = 172)
STRIDE = KEEP * HOP       # samples between windows (see the docstring)
FRAME_S = HOP / SAMPLE_RATE
# The graph's names, as basic_pitch.inference.Model.predict maps them.
INPUT = "serving_default_input_2:0"
OUTPUTS = ("StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0")  # note, onset, contour
# Windows per session.run. Measured on this 2-core CPU over 60 s: 1 a call peaks 32 MiB above the
# loaded session, 4 ~100 MiB, 8 ~200 MiB; 4 was the fastest (ONNX Runtime's arena keeps the peak).
BATCH = 4
INTERACTIVE_MAX_S = 60.0
CHUNK_WINDOWS = 36        # 59.4 s of frames per job chunk
MARGIN_WINDOWS = 4        # 6.6 s of context on each side of a chunk for the notes
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

_MISSING = ("basic-pitch is not installed: run ./setup.sh (it installs basic-pitch==0.4.0 --no-deps, "
            "whose wheel holds the nmp.onnx transcription network)")


def model_path() -> Path:
    return package_folder("basic_pitch", "saved_models/icassp_2022", ["nmp.onnx"], _MISSING) / "nmp.onnx"


def unavailable_reason() -> str | None:
    return reason_if_missing(model_path)


def load(device: str):
    """An ONNX Runtime session of nmp.onnx on `device` ('cpu' or 'cuda:N')."""
    return onnx_runtime.session(model_path(), device)


def note_name(pitch: int) -> str:
    """MIDI pitch -> name, middle C = C4: 69 -> 'A4', 60 -> 'C4', 21 -> 'A0'."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def seconds_bucket(seconds: float) -> str:
    """Input size in seconds ('s:12.5'): the length, at most a chunk (memory follows the chunk)."""
    return seconds_key(min(seconds, CHUNK_WINDOWS * STRIDE / SAMPLE_RATE))


def frame_count(samples: int) -> int:
    """Frames for audio of this many samples: unwrap_output's floor(n * ANNOTATIONS_FPS / sr),
    ANNOTATIONS_FPS = 22050 // 256 = 86."""
    return int(np.floor(samples * (SAMPLE_RATE // HOP) / SAMPLE_RATE))


def options_of(params: dict) -> dict:
    return {"onset_threshold": float(params.get("onset_threshold", decode.ONSET_THRESHOLD)),
            "frame_threshold": float(params.get("frame_threshold", decode.FRAME_THRESHOLD)),
            "min_note_ms": float(params.get("min_note_ms", decode.MIN_NOTE_MS))}


# ---------------------------------------------------------------------------------- the network

def _window(audio: np.ndarray, offset: int, index: int) -> np.ndarray:
    """Window `index` of the grid, from `audio` whose first sample is the file's sample `offset`;
    zeros where the window reaches before the file or past what `audio` holds."""
    start = index * STRIDE - EDGE * HOP - offset
    piece = audio[max(start, 0):max(start + WINDOW, 0)]
    before = max(0, -start)
    return np.pad(piece, (before, WINDOW - before - piece.size))


def activations(session, audio: np.ndarray, offset: int, first: int, count: int):
    """(note [n, 88], onset [n, 88], contour [n, 264]) for frames [first * KEEP, (first + count)
    * KEEP): windows first .. first + count - 1 of the grid, each giving its middle KEEP frames."""
    parts: list[list[np.ndarray]] = [[], [], []]
    for b in range(first, first + count, BATCH):
        batch = np.stack([_window(audio, offset, w) for w in range(b, min(b + BATCH, first + count))])
        for part, out in zip(parts, session.run(list(OUTPUTS), {INPUT: batch[..., None]})):
            part.append(out[:, EDGE:EDGE + KEEP].reshape(-1, out.shape[-1]))
    if not parts[0]:
        return np.zeros((0, 88), np.float32), np.zeros((0, 88), np.float32), np.zeros((0, 264), np.float32)
    return tuple(np.concatenate(part) for part in parts)


def _events(outputs, first_frame: int, keep: range, options: dict) -> list[tuple]:
    """Notes of a stretch of outputs starting at frame `first_frame`, those that start in `keep`
    (frames of the file), with their bends; frames counted from the file's start."""
    note, onset, contour = outputs
    found = decode.note_events(note, onset, options["onset_threshold"], options["frame_threshold"],
                               decode.min_note_frames(options["min_note_ms"]))
    found = [n for n in found if n[0] + first_frame in keep]
    return [(s + first_frame, e + first_frame, p, a, b) for s, e, p, a, b in decode.pitch_bends(contour, found)]


def result_of(events: list[tuple], duration_s: float, options: dict) -> dict:
    """The JSON answer: {"notes": [{"start", "end" (s), "pitch" (MIDI), "note" ("A4"), "velocity"
    (1-127), "bends" (thirds of a semitone a frame, or null where the note overlaps another)}],
    "duration_s", "onset_threshold", "frame_threshold", "min_note_ms"}."""
    notes = [{"start": round(s * FRAME_S, 4), "end": round(e * FRAME_S, 4), "pitch": p, "note": note_name(p),
              "velocity": int(np.clip(np.round(127 * a), 1, 127)), "bends": b}
             for s, e, p, a, b in decode.drop_overlapping_bends(events)]
    notes.sort(key=lambda n: (n["start"], n["pitch"]))
    return {"notes": notes, "duration_s": round(duration_s, 3), **options}


def transcribe(call: Call, samples: np.ndarray, options: dict | None = None) -> dict:
    """Notes of mono 22050 Hz audio in one pass (result_of's dict)."""
    options = options_of(options or {})
    samples = np.asarray(samples, np.float32).reshape(-1)
    n = frame_count(samples.size)
    outputs = call(NOTES_MODEL, lambda s: activations(s, samples, 0, 0, math.ceil(n / KEEP)))
    outputs = tuple(o[:n] for o in outputs)
    return result_of(_events(outputs, 0, range(n), options), samples.size / SAMPLE_RATE, options)


def transcribe_file(call: Call, path, options: dict | None = None,
                    max_seconds: float | None = INTERACTIVE_MAX_S) -> dict:
    """transcribe() of an audio file or a video's sound (ffmpeg decodes it at 22050 Hz); a
    MediaError for a file longer than max_seconds."""
    return transcribe(call, read_audio(path, SAMPLE_RATE, max_seconds=max_seconds), options)


def save(result: dict, folder: Path) -> tuple[Path, Path]:
    """notes.json and notes.mid in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_json(folder / "notes.json", result), write_midi(folder / "notes.mid", result["notes"], FRAME_S)


# ---------------------------------------------------------------------------------- long audio

def _begin(index: int) -> int:
    """The first file sample chunk `index` needs (its left margin's first window)."""
    return max(0, max(0, index * CHUNK_WINDOWS - MARGIN_WINDOWS) * STRIDE - EDGE * HOP)


def _end(index: int) -> int:
    """The file sample after the last one chunk `index` needs (its right margin's last window)."""
    return ((index + 1) * CHUNK_WINDOWS + MARGIN_WINDOWS - 1) * STRIDE - EDGE * HOP + WINDOW


def _chunk_notes(call: Call, audio: np.ndarray, begin: int, index: int, size: int | None,
                 options: dict) -> tuple[list[tuple], bool]:
    """Notes that start in chunk `index`, from `audio` (the file from sample `begin` on, through
    the chunk's right margin or to the end, whose length `size` is then known); and whether
    chunks follow."""
    first, last = max(0, index * CHUNK_WINDOWS - MARGIN_WINDOWS), (index + 1) * CHUNK_WINDOWS + MARGIN_WINDOWS
    total = None if size is None else frame_count(size)
    end_frame = last * KEEP if total is None else min(last * KEEP, total)
    count = max(0, math.ceil(end_frame / KEEP) - first)
    outputs = call(NOTES_MODEL, lambda s: activations(s, audio, begin, first, count))
    outputs = tuple(o[:max(0, end_frame - first * KEEP)] for o in outputs)
    own = range(index * CHUNK_WINDOWS * KEEP, min((index + 1) * CHUNK_WINDOWS * KEEP, end_frame))
    return _events(outputs, first * KEEP, own, options), total is None or own.stop < total


def _chunks(call: Call, path, index: int, options: dict) -> Iterator[tuple[int, list[tuple], bool, int | None]]:
    """(chunk, its notes, whether chunks follow, the file's length in samples once known) from
    chunk `index` on. One ffmpeg process streams the file, so every chunk sees the samples of one
    pass (a seek per chunk would restart the resampler: other samples, by a hair); memory holds
    a chunk and its margins. A resumed job seeks once, to its first chunk's margin."""
    begin = _begin(index)
    audio = np.zeros(0, np.float32)
    with contextlib.closing(stream_audio(path, SAMPLE_RATE, STRIDE / SAMPLE_RATE, begin / SAMPLE_RATE)) as pieces:
        for _, piece in pieces:
            audio = np.concatenate([audio, piece])
            while begin + audio.size >= _end(index):
                events, _ = _chunk_notes(call, audio, begin, index, None, options)
                yield index, events, True, None
                index += 1
                audio, begin = audio[_begin(index) - begin:], _begin(index)
    size, more = begin + audio.size, True
    while more:
        events, more = _chunk_notes(call, audio, begin, index, size, options)
        yield index, events, more, size
        index += 1
        audio, begin = audio[_begin(index) - begin:], _begin(index)


def notes_job(ctx: JobContext) -> str:
    """Job kind transcribe_notes_long: params onset_threshold, frame_threshold, min_note_ms; input
    'audio'. Writes notes.json (result_of's dict) and notes.mid beside it; returns the JSON's
    path. Each chunk's notes are saved before the next starts: a killed job resumes there."""
    options = options_of(ctx.params)
    source = ctx.input("audio")
    duration = probe_audio(source).duration_s or 60.0
    chunk_s = CHUNK_WINDOWS * STRIDE / SAMPLE_RATE
    total_chunks = max(1, math.ceil(duration / chunk_s))
    folder = ctx.work_dir / "notes_chunks"
    folder.mkdir(exist_ok=True)
    start = 0
    while (folder / f"{start:05d}.json").exists():
        start += 1
    if start:
        ctx.resumed_from(start * chunk_s, "s")
    if not (folder / "end.json").exists():
        for index, events, more, size in _chunks(ctx.call, source, start, options):
            write_json(folder / f"{index:05d}.json", events)
            if not more:
                write_json(folder / "end.json", {"samples": size, "chunks": index + 1})
            ctx.save_checkpoint(notes_chunks=index + 1)
            ctx.progress(0.95 * min((index + 1) / total_chunks, 1.0), f"notes: {index + 1} of {total_chunks} chunks")
            ctx.check_cancelled()
    end = json.loads((folder / "end.json").read_text())
    events = [tuple(e) for i in range(end["chunks"]) for e in json.loads((folder / f"{i:05d}.json").read_text())]
    json_path, _ = save(result_of(events, end["samples"] / SAMPLE_RATE, options), ctx.work_dir)
    return str(json_path)


def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=NOTES_MODEL, role="interactive", runtime="onnxruntime", loader=load,
            device=onnx_runtime.spec_device(),
            source="basic-pitch 0.4.0 wheel: saved_models/icassp_2022/nmp.onnx (Apache-2.0)",
            # Measured on CPU: the session adds ~12 MiB RSS; a pass peaks ~100 MiB above it (BATCH).
            estimate_bytes=16 * MiB, run_estimate_bytes=128 * MiB,
            function="music transcription (notes, polyphonic)",
            description="Basic Pitch (ICASSP 2022): polyphonic notes, onsets and pitch contour from "
                        "music, 88 piano keys, per 11.6 ms; notes to MIDI"),
    ]
