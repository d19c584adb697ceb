"""Text recognition (OCR) with the PP-OCRv4 ONNX models bundled in the rapidocr-onnxruntime wheel.

The model object is the package's own RapidOCR pipeline (detect lines, fix 180-degree turns,
recognise), built in our loader so the engine measures and leases it. RapidOCR 1.4.4 never
downloads anything: it only opens the three .onnx files inside its package folder.

Known quirk of the recogniser: the space between two ALL-CAPS words is sometimes dropped
("HELLOWORLD"); mixed-case text keeps its spaces far more reliably. The detector misses a word
cropped to its edges, so read_text adds a border of the edge colour first.

Video: ocr_video samples a few frames a second, reads each, and merges consecutive samples
showing the same text into one subtitle; the result is an SRT file.
"""
from __future__ import annotations

import importlib.util
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine import JobContext, ModelSpec
from engine.devices import usable_cores
from engine.files import write_text
from engine.media.subtitles import srt_time
from engine.media.video import probe, read_chunks
from engine.media.video_job import chunk_frames_of
from engine.package_files import package_folder, reason_if_missing
from engine.runtimes import onnx_runtime

MiB = 1024**2

OCR = "ocr"  # the model's name, and the image capability
VIDEO_JOB = "ocr_video"

_PACKAGE = "rapidocr_onnxruntime"
_MODEL_FILES = ("ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx",
                "ch_ppocr_mobile_v2.0_cls_infer.onnx")
_MISSING = ("rapidocr-onnxruntime is not installed: run ./setup.sh "
            "(it installs rapidocr-onnxruntime==1.4.4, whose wheel carries the PP-OCRv4 models)")

DEFAULT_SAMPLES_PER_SECOND = 2.0
MIN_SAMPLES_PER_SECOND, MAX_SAMPLES_PER_SECOND = 0.25, 10.0


# ------------------------------------------------------------------------------ the model

def models_dir() -> Path:
    """The folder of the installed package's bundled .onnx files; FileNotFoundError if absent."""
    folder = package_folder(_PACKAGE, "models", _MODEL_FILES, _MISSING)
    if importlib.util.find_spec("cv2") is None:
        raise FileNotFoundError("opencv-python is not installed: rapidocr-onnxruntime needs it (run ./setup.sh)")
    return folder


def unavailable_reason() -> str | None:
    """Why OCR cannot run here (which package to install), or None when it can."""
    return reason_if_missing(models_dir)


def load_ocr(device: str = "cpu"):
    """The RapidOCR pipeline on the wheel's bundled models, with sessions for `device`."""
    models_dir()  # a clear "install X" message rather than an import error deep inside
    from rapidocr_onnxruntime import RapidOCR

    threads = usable_cores()
    # No config_path: the package's own config.yaml, whose model paths point into the package.
    # The package honours thread counts from 1 to os.cpu_count(); inter-op threads only matter
    # in parallel execution mode, which it does not use.
    ocr = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
    if device.startswith("cuda"):
        _move_to_cuda(ocr, device)
    return ocr


def _move_to_cuda(ocr, device: str) -> None:
    """Replace the package's CPU sessions with CUDA ones on the engine's device.

    RapidOCR's own CUDA switch always takes device 0 and searches cuDNN algorithms exhaustively,
    which is re-run for every new input shape (each image size, each batch width of text lines).
    """
    folder = models_dir()
    det, rec, cls = _MODEL_FILES
    for wrapper, name in ((ocr.text_det.infer, det), (ocr.text_cls.infer, cls), (ocr.text_rec.session, rec)):
        # The wrapper only calls .run and reads names and metadata through .session.
        wrapper.session = onnx_runtime.session(folder / name, device,
                                               cuda_options={"cudnn_conv_algo_search": "HEURISTIC"})


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """RapidOCR takes arrays as OpenCV BGR; ours are RGB (or gray, or RGBA from an upload)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"the image must be uint8, not {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = np.asarray(Image.fromarray(image, "RGBA").convert("RGB"))
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the image must be gray, RGB or RGBA, not of shape {image.shape}")
    return np.ascontiguousarray(image[..., ::-1])


# The text detector misses words that touch the image's edges (a photo cropped to one word):
# a border of the edge colour gives them a margin (real crops: docs/quality.md, OCR).
BORDER = 64


def read_text(ocr, image: np.ndarray, border: int = BORDER) -> list[dict]:
    """Lines of text in `image` (RGB uint8), top to bottom, left to right.

    Each line: {"box": [[x, y] x4] (corners clockwise from top-left, input pixels),
    "text": str, "score": float (0-1)}. An image without text gives []. The model sees the image
    inside `border` px of its edge colour (at most half its short side).
    """
    bgr = _as_bgr(image)
    height, width = bgr.shape[:2]
    pad = min(min(height, width) // 2, border)
    if pad:
        bgr = np.pad(bgr, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    found, _elapsed = ocr(bgr)
    lines = []
    for box, text, score in found or []:
        text = text.strip()
        if text:
            corners = [[round(float(np.clip(x - pad, 0, width)), 1), round(float(np.clip(y - pad, 0, height)), 1)]
                       for x, y in box]
            lines.append({"box": corners, "text": text, "score": round(float(score), 4)})
    return lines


def draw_lines(image: np.ndarray, lines: list[dict]) -> np.ndarray:
    """RGB copy of `image` with each line's box outlined and its text written above it."""
    canvas = Image.fromarray(np.flip(_as_bgr(image), axis=2))
    draw = ImageDraw.Draw(canvas)
    # Strokes and labels scale with the image, so they stay visible on large photos.
    line = max(1, round(min(canvas.size) / 300))
    for item in lines:
        points = [tuple(p) for p in item["box"]]
        draw.polygon(points, outline=(0, 200, 0), width=line)
        height = max(abs(points[3][1] - points[0][1]), 8)
        font = ImageFont.load_default(size=int(min(max(10, 0.6 * height), 48)))
        label = f"{item['text']} ({item['score']:.2f})"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left, bottom - top
        x, y = points[0]
        # Above the box, or inside it when the box touches the top edge.
        ty = y - th - 2 * line - 2 if y - th - 2 * line - 2 >= 0 else y + line
        draw.rectangle([x, ty, x + tw + 2 * line, ty + th + 2 * line], fill=(0, 200, 0))
        draw.text((x + line - left, ty + line - top), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def specs() -> list[ModelSpec]:
    # Where no CUDA provider truly loads the sessions live in RAM: pinning the spec to the CPU
    # makes the engine account its memory where it really is, even on a GPU machine.
    return [ModelSpec(
        name=OCR, role="interactive", runtime="onnxruntime", loader=load_ocr, device=onnx_runtime.spec_device(),
        source="rapidocr-onnxruntime 1.4.4 wheel: PP-OCRv4 det, rec and cls ONNX (16 MB)",
        # Measured on a 2-core CPU: 80 MiB resident after the first load (cv2 and onnxruntime
        # imports included); runs peak 115 MiB above it at 512 px and up to 320 MiB on the first
        # run (the detector scales the short side up to 736 px, larger images stay as they are).
        estimate_bytes=80 * MiB, run_estimate_bytes=320 * MiB, max_instances=2,
        function="text detection, orientation and recognition (OCR)", networks=3,
        description="PP-OCRv4 (RapidOCR): finds and reads lines of printed text")]


# ------------------------------------------------------------------------------ subtitles

def _same_text(a: str, b: str) -> bool:
    # The recogniser sometimes drops or adds a space between frames: that is still one subtitle.
    return re.sub(r"\s+", "", a) == re.sub(r"\s+", "", b)


def add_sample(runs: list[list], frame: int, text: str, score: float) -> None:
    """Fold one sampled frame into runs of [first frame, text, best score] (in place).

    A run lasts until the next run starts; runs with empty text are gaps without subtitles.
    Keeping runs, not samples, keeps the checkpoint small however long the video is.
    """
    if runs and _same_text(runs[-1][1], text):
        if score > runs[-1][2]:   # keep the clearest reading of the run
            runs[-1][1], runs[-1][2] = text, score
        return
    runs.append([frame, text, score])


def write_srt(runs: list[list], end_frame: int, fps: Fraction, path: Path) -> int:
    """Write the runs as a numbered SRT file (atomically); returns the number of cues."""
    cues = []
    for i, (start, text, _score) in enumerate(runs):
        if not text:
            continue
        stop = runs[i + 1][0] if i + 1 < len(runs) else end_frame
        if stop > start:
            cues.append((float(start / fps), float(stop / fps), text))
    body = "".join(f"{n}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n\n"
                   for n, (a, b, text) in enumerate(cues, 1))
    write_text(path, body)
    return len(cues)


def sample_frames(fps: Fraction, frames: int, per_second: float) -> list[int]:
    """Indices of the first frame at or after each sampling time k / per_second."""
    step = fps / Fraction(per_second).limit_denominator(1000)   # frames between samples
    if step <= 1:
        return list(range(frames))
    return [math.ceil(k * step) for k in range(math.ceil(frames / step)) if math.ceil(k * step) < frames]


def frame_text(lines: list[dict]) -> tuple[str, float]:
    """A frame's subtitle: its lines in reading order, one per row, and their mean score."""
    if not lines:
        return "", 0.0
    return "\n".join(line["text"] for line in lines), float(np.mean([line["score"] for line in lines]))


def video_job(ctx: JobContext) -> str:
    """Job kind ocr_video: params samples_per_second, chunk_frames; input 'video'. Result: .srt.

    The request was checked at submit (tabs.ocr.check); a file that cannot be read fails the job
    with a MediaError in plain words."""
    info = probe(ctx.input("video"))
    per_second = float(ctx.params.get("samples_per_second") or DEFAULT_SAMPLES_PER_SECOND)
    chunk_frames = chunk_frames_of(ctx)
    next_frame = ctx.checkpoint.get("next_frame", 0)
    runs = [list(r) for r in ctx.checkpoint.get("runs", [])]
    if not ctx.checkpoint:
        ctx.save_checkpoint(chunk_frames=chunk_frames, next_frame=0, runs=[])
    if next_frame:
        ctx.resumed_from(next_frame)
    wanted = set(sample_frames(info.fps, info.frames, per_second))
    for start, frames in read_chunks(ctx.input("video"), chunk_frames, start_frame=next_frame):
        ctx.check_cancelled()
        picked = [i for i in range(len(frames)) if start + i in wanted]
        if picked:
            # One lease per chunk: interactive OCR calls get the model between chunks.
            found = ctx.call(OCR, lambda ocr: [read_text(ocr, frames[i]) for i in picked])
            for i, lines in zip(picked, found):
                add_sample(runs, start + i, *frame_text(lines))
        next_frame = start + len(frames)
        ctx.save_checkpoint(next_frame=next_frame, runs=runs)
        # Writing the file is the last step: 100% only once it is there.
        ctx.progress(0.99 * next_frame / info.frames, f"frame {next_frame} of {info.frames}")
    ctx.check_cancelled()
    result = ctx.work_dir / "result.srt"
    write_srt(runs, next_frame, info.fps, result)
    return str(result)
