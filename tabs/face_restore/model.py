"""Face restoration on the hub ONNX files of GFPGAN v1.4 and CodeFormer, on the one face detector.

Each face the detector finds is aligned by its five landmarks to the ffhq_512 template, restored
at 512x512 and pasted back under a soft box mask, the way FaceFusion's face enhancer does it
(facts and sources: docs/face_studio_facts.md §2 and §5).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np

from analysers import face_detector
from analysers.face_detector import FACE_DETECTOR
from engine import Call, ModelSpec, UserFacingError
from engine.media.video import limit_pixels
from engine.runtimes import onnx_runtime
from store import hub_files
from store.manifest import HubFile, local_path

from .manifest import ACTIVATIONS, CODEFORMER, ENTRIES, GFPGAN

CROP = 512
# FaceFusion's ffhq_512 (= facexlib's FFHQ-512 template / 512): left eye, right eye, nose, left and
# right mouth corners, the order MTCNN gives its landmarks in.
FFHQ_512 = np.array([[0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
                     [0.39308822, 0.72541100], [0.61150205, 0.72490465]], np.float32) * CROP
MASK_BLUR = 0.3            # FaceFusion's default face_mask_blur; padding forced to 0 for enhancers
BLEND = 0.8                # FaceFusion's default face_enhancer_blend (80 %): the restored share
DEFAULT_FIDELITY = 0.5     # CodeFormer's own default w (and FaceFusion's)


class Restorer:
    """A loaded restorer: its ONNX Runtime session, fed by input name, read at output 0."""

    def __init__(self, entry: HubFile, session):
        self.entry, self.session = entry, session
        names = {i.name for i in session.get_inputs()}
        self.takes_weight = "weight" in names    # FaceFusion's has_weight_input

    def run(self, crop: np.ndarray, fidelity: float = DEFAULT_FIDELITY) -> np.ndarray:
        """uint8 RGB [512, 512, 3] aligned face -> the restored face, uint8 RGB [512, 512, 3]."""
        x = (crop.astype(np.float32) / 255.0 - 0.5) / 0.5            # [-1, 1]
        feed = {"input": np.ascontiguousarray(x.transpose(2, 0, 1)[None])}
        if self.takes_weight:
            feed["weight"] = np.array([fidelity], np.float64)
        y = self.session.run(None, feed)[0][0]
        y = (np.clip(y, -1.0, 1.0) + 1.0) / 2.0 * 255.0
        return np.round(y).astype(np.uint8).transpose(1, 2, 0)

    def close(self) -> None:
        self.session = None


def problem(data_dir: str | os.PathLike, entry: HubFile, label: str) -> str | None:
    """None when the file is ready, else a short message for an error (status() has the details
    the tab shows: URLs, the exact path, hashes, the licence)."""
    found = hub_files.status(entry, data_dir)
    if found["ready"]:
        return None
    if not found["present"]:
        return (f"{label} needs the file {entry.file}, which is not here yet: download it or use your copy "
                "under \"Get the model file\" in this tab (API: restore_faces_download, restore_faces_bring).")
    return f"The {label} file in place cannot be used: {found['state']}."


def status(data_dir: str | os.PathLike, entry: HubFile) -> str | None:
    """None when the file is in place and checked (hash, graph, licence), else what to do, in
    plain words (the store's state and how to get the file)."""
    found = hub_files.status(entry, data_dir)
    if found["ready"]:
        return None
    if not found["present"]:
        return found["how_to_get"]
    return (f"The file at {found['path']} cannot be used ({found['state']}). Get {entry.file} from "
            f"{' or '.join(entry.urls)}, or bring your copy again in this tab.")


class HubLoader:
    """A spec's loader: opens the entry's file under one data dir, once the store has checked it."""

    def __init__(self, entry: HubFile, data_dir: str | os.PathLike):
        self.entry, self.data_dir = entry, Path(data_dir)

    @property
    def path(self) -> Path:
        return local_path(self.data_dir, self.entry)

    def __call__(self, device: str) -> Restorer:
        return Restorer(self.entry, onnx_runtime.session(hub_files.require(self.entry, self.data_dir), device))


def specs(data_dir: str | os.PathLike = "data") -> list[ModelSpec]:
    """The two restorers, loading their files from data_dir's hub-files (tabs.catalog passes the
    engine's data dir; "data" is the app's default)."""
    common = dict(role="heavy",   # 340-377 MB, used now and then: the first to go when room is short
                  runtime="onnxruntime", device=onnx_runtime.spec_device(), unloader=Restorer.close,
                  run_estimate_bytes=ACTIVATIONS, networks=1)
    return [
        ModelSpec(name=GFPGAN.name, loader=HubLoader(GFPGAN, data_dir),
                  source=f"hub file {GFPGAN.file} ({GFPGAN.urls[0]})",
                  estimate_bytes=GFPGAN.size, function="face restoration (GFPGAN 1.4)",
                  description="GFPGAN v1.4 (FaceFusion's ONNX): restores every face of a photo at 512 px",
                  **common),
        ModelSpec(name=CODEFORMER.name, loader=HubLoader(CODEFORMER, data_dir),
                  source=f"hub file {CODEFORMER.file} ({CODEFORMER.urls[0]})",
                  estimate_bytes=CODEFORMER.size, function="face restoration with a fidelity weight (CodeFormer)",
                  description="CodeFormer (FaceFusion's ONNX): face restoration, fidelity weight w in [0, 1]",
                  **common),
    ]


# ------------------------------------------------------------------ align, restore, paste back

def align(image: np.ndarray, landmarks) -> tuple[np.ndarray, np.ndarray]:
    """The 512x512 ffhq_512 crop of one face and its 2x3 affine (image -> crop). A similarity
    (rotation, uniform scale, shift) fitted as FaceFusion does: RANSAC with a 100 px threshold,
    which keeps all five points."""
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(points, FFHQ_512, method=cv2.RANSAC, ransacReprojThreshold=100)
    if matrix is None:
        raise ValueError("the landmarks do not define a similarity")
    crop = cv2.warpAffine(image, matrix, (CROP, CROP), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_AREA)
    return crop, matrix


@functools.lru_cache(maxsize=4)
def box_mask(size: int = CROP, blur: float = MASK_BLUR) -> np.ndarray:
    """FaceFusion's create_box_mask with zero padding: ones, a border of blur_area zeroed, then a
    Gaussian of sigma blur_amount / 4 (float32 [size, size] in [0, 1])."""
    blur_amount = int(size * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    mask = np.ones((size, size), np.float32)
    mask[:blur_area], mask[-blur_area:], mask[:, :blur_area], mask[:, -blur_area:] = 0, 0, 0, 0
    if blur_amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur_amount * 0.25)
    mask.flags.writeable = False
    return mask


def paste_back(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray,
               blend: float = BLEND) -> np.ndarray:
    """frame with crop warped back by the inverse of matrix under mask (times blend), only inside
    the box the crop covers (FaceFusion's paste_back, then its enhancer blend)."""
    height, width = frame.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [CROP, 0], [CROP, CROP], [0, CROP]], np.float32)
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    x1, y1 = np.clip(np.floor(mapped.min(axis=0)).astype(int), 0, [width, height])
    x2, y2 = np.clip(np.ceil(mapped.max(axis=0)).astype(int), 0, [width, height])
    if x2 <= x1 or y2 <= y1:
        return frame
    inverse[:, 2] -= (x1, y1)
    size = (int(x2 - x1), int(y2 - y1))
    alpha = np.clip(cv2.warpAffine(mask, inverse, size), 0, 1)[..., None] * blend
    face = cv2.warpAffine(crop, inverse, size, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    out = frame.copy()
    region = out[y1:y2, x1:x2].astype(np.float32)
    out[y1:y2, x1:x2] = np.clip(np.round(region * (1 - alpha) + face * alpha), 0, 255).astype(frame.dtype)
    return out


def restore(model: Restorer, image: np.ndarray, faces: list[dict], fidelity: float = DEFAULT_FIDELITY) -> np.ndarray:
    """Every face of image restored and pasted back, one after the other on the updated frame."""
    out = np.ascontiguousarray(image)
    for face in faces:
        crop, matrix = align(out, face["landmarks"])
        out = paste_back(out, model.run(crop, fidelity), box_mask(), matrix)
    return out


def find_faces(detector, image: np.ndarray, max_pixels: int | None) -> list[dict]:
    """Faces of image (detected on a copy shrunk to the detector's limit), landmarks in its pixels."""
    small, scale = limit_pixels(image, max_pixels) if max_pixels else (image, 1.0)
    faces = face_detector.detect_faces(detector, small)
    return [{**f, "landmarks": [[x / scale, y / scale] for x, y in f["landmarks"]],
             "box": [v / scale for v in f["box"]]} for f in faces]


def restore_photo(call: Call, image: np.ndarray, model_name: str, fidelity: float,
                  max_pixels: int | None) -> tuple[np.ndarray, int]:
    """(the photo with every face restored, how many faces); a plain error when there is none."""
    image = face_detector.as_rgb(image)   # gray or RGBA in, RGB out
    faces = call(FACE_DETECTOR, lambda detector: find_faces(detector, image, max_pixels))
    if not faces:
        raise UserFacingError("No face was found in this photo, so there is nothing to restore. "
                              "Faces smaller than about 20 pixels, or turned far away, are not found.")
    return call(model_name, lambda model: restore(model, image, faces, fidelity)), len(faces)


def entry_named(model_name: str) -> HubFile:
    """The manifest entry of a choice the tab offers ("GFPGAN 1.4", "CodeFormer") or an engine name."""
    found = ENTRIES.get(model_name) or next((e for e in ENTRIES.values() if e.name == model_name), None)
    if found is None:
        raise UserFacingError(f"Model must be one of {', '.join(ENTRIES)}.")
    return found
