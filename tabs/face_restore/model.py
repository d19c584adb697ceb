"""Face restoration on the hub ONNX files of GFPGAN v1.4 and CodeFormer, on the one face detector.

Each face the detector finds is aligned by its five landmarks to the ffhq_512 template, restored
at 512x512 and pasted back under a soft box mask, the way FaceFusion's face enhancer does it
(facts and sources: docs/face_studio_facts.md §2 and §5).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from analysers import face_align, face_detector
from analysers.face_detector import FACE_DETECTOR
from engine import Call, ModelSpec, UserFacingError
from engine.runtimes import onnx_runtime
from store import hub_files, hub_messages
from store.manifest import HubFile, load_estimate

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
    return hub_messages.short_problem(entry, data_dir, label, "Get the model file",
                                   "restore_faces_download, restore_faces_bring")


def status(data_dir: str | os.PathLike, entry: HubFile) -> str | None:
    """None when the file is in place and checked (hash, graph, licence), else what to do."""
    return hub_messages.explain(entry, data_dir)


def open_restorer(entry: HubFile, path: Path, device: str) -> Restorer:
    return Restorer(entry, onnx_runtime.session(path, device))


def specs(data_dir: str | os.PathLike = "data") -> list[ModelSpec]:
    """The two restorers, loading their files from data_dir's hub-files (tabs.catalog passes the
    engine's data dir; "data" is the app's default)."""
    common = dict(role="heavy",   # 340-377 MB, used now and then: the first to go when room is short
                  runtime="onnxruntime", device=onnx_runtime.spec_device(), unloader=Restorer.close,
                  run_estimate_bytes=ACTIVATIONS, networks=1)
    return [
        ModelSpec(name=GFPGAN.name,
                  loader=hub_files.HubLoader(GFPGAN, data_dir, functools.partial(open_restorer, GFPGAN)),
                  source=f"hub file {GFPGAN.file} ({GFPGAN.urls[0]})",
                  estimate_bytes=load_estimate(GFPGAN), function="face restoration (GFPGAN 1.4)",
                  description="GFPGAN v1.4 (FaceFusion's ONNX): restores every face of a photo at 512 px",
                  **common),
        ModelSpec(name=CODEFORMER.name,
                  loader=hub_files.HubLoader(CODEFORMER, data_dir, functools.partial(open_restorer, CODEFORMER)),
                  source=f"hub file {CODEFORMER.file} ({CODEFORMER.urls[0]})",
                  estimate_bytes=load_estimate(CODEFORMER),
                  function="face restoration with a fidelity weight (CodeFormer)",
                  description="CodeFormer (FaceFusion's ONNX): face restoration, fidelity weight w in [0, 1]",
                  **common),
    ]


# ------------------------------------------------------------------ align, restore, paste back

def align(image: np.ndarray, landmarks) -> tuple[np.ndarray, np.ndarray]:
    """The 512x512 crop of one face on ffhq_512 and its 2x3 affine (image -> crop)."""
    return face_align.align(image, landmarks, FFHQ_512, CROP)


def box_mask() -> np.ndarray:
    return face_align.box_mask(CROP, MASK_BLUR)


def paste_back(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray,
               blend: float = BLEND) -> np.ndarray:
    """face_align.paste_back with FaceFusion's enhancer blend (80 % restored) by default."""
    return face_align.paste_back(frame, crop, mask, matrix, blend)


def restore(model: Restorer, image: np.ndarray, faces: list[dict], fidelity: float = DEFAULT_FIDELITY) -> np.ndarray:
    """Every face of image restored and pasted back, one after the other on the updated frame."""
    out = np.ascontiguousarray(image)
    for face in faces:
        crop, matrix = align(out, face["landmarks"])
        out = paste_back(out, model.run(crop, fidelity), box_mask(), matrix)
    return out


find_faces = face_align.find_faces


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
