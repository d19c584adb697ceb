"""Portrait animation on LivePortrait's four ONNX networks (FaceFusion's exports), on the one face
detector: a portrait photo takes the head pose and expression of a driving face.

Each face is cropped as FaceFusion's face_editor crops a face it re-poses (facts §4a): the five
landmarks scaled by 1.5 about the nose (FaceFusion scale_face_landmark_5), fitted to ffhq_512 at
512 px; the crop resized to 256 (INTER_AREA), RGB / 255, NCHW. face_editor is the FaceFusion
processor that turns the whole head; expression_restorer's tighter arcface_128 crop only moves
the expression and would cut off a turning head. The wider crop is also closer to LivePortrait's
own (scale 2.3 of the face box). The generator's 512 RGB face in [0, 1] goes back into the
portrait under FaceFusion's box mask (blur 0.3, padding 0) with paste_back (facts §5).

The networks, one engine model each (their own file, download, hash, footprint and lease):
feature extractor (portrait -> feature volume), motion extractor (face crop -> pose, expression,
keypoints), stitcher (driven keypoints -> stitched), generator (volume + keypoints -> face).
The keypoint maths is motion.py.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from analysers import face_align, face_detector
from engine import ModelSpec, UserFacingError
from engine.runtimes import onnx_runtime
from store import hub_files, hub_messages
from store.manifest import HubFile, load_estimate

from . import motion
from .manifest import ACTIVATIONS, ENTRIES, FEATURE_EXTRACTOR, GENERATOR, MOTION_EXTRACTOR, STITCHER

CROP, NET = 512, 256
# FaceFusion's ffhq_512 (= facexlib's FFHQ-512 template / 512), in MTCNN's landmark order.
FFHQ_512 = np.array([[0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
                     [0.39308822, 0.72541100], [0.61150205, 0.72490465]], np.float32) * CROP
LANDMARK_SCALE = 1.5     # face_editor: scale_face_landmark_5(landmarks, 1.5) about the nose
MASK_BLUR = 0.3          # FaceFusion's default face_mask_blur, padding (0, 0, 0, 0)
SECTION, APIS = "Get the model files", "animate_portrait_download, animate_portrait_bring"


class Graph:
    """One network's ONNX Runtime session: inputs fed by name, outputs read by position."""

    def __init__(self, session):
        self.session = session

    def run(self, feed: dict) -> list[np.ndarray]:
        return self.session.run(None, feed)

    def close(self) -> None:
        self.session = None


def open_graph(path: Path, device: str) -> Graph:
    return Graph(onnx_runtime.session(path, device))


def specs(data_dir: str | os.PathLike = "data") -> list[ModelSpec]:
    """The four networks, one model each: a file of their own, fetched, checked, measured and
    leased apart (the generator, 222 MB, is the only big one; leased once per video chunk)."""
    roles = {GENERATOR.name: "heavy", MOTION_EXTRACTOR.name: "heavy",
             FEATURE_EXTRACTOR.name: "micro", STITCHER.name: "micro"}
    functions = {FEATURE_EXTRACTOR.name: "portrait appearance features (LivePortrait F)",
                 MOTION_EXTRACTOR.name: "head pose, expression and keypoints of a face (LivePortrait M)",
                 STITCHER.name: "keypoint stitching for portrait animation (LivePortrait S)",
                 GENERATOR.name: "face redrawn from driven keypoints (LivePortrait W + G)"}
    return [ModelSpec(name=entry.name, role=roles[entry.name], runtime="onnxruntime",
                      loader=hub_files.HubLoader(entry, data_dir, open_graph), unloader=Graph.close,
                      device=onnx_runtime.spec_device(), source=f"hub file {entry.file} ({entry.urls[0]})",
                      estimate_bytes=load_estimate(entry), run_estimate_bytes=ACTIVATIONS[entry.name],
                      function=functions[entry.name], networks=1,
                      description=f"LivePortrait {label.lower()} (FaceFusion's ONNX, MIT)")
            for label, entry in ENTRIES.items()]


def entry_named(name: str) -> HubFile:
    """The manifest entry of a choice the tab offers ("Generator") or an engine name."""
    found = ENTRIES.get(name) or next((e for e in ENTRIES.values() if e.name == name), None)
    if found is None:
        raise UserFacingError(f"The model file must be one of {', '.join(ENTRIES)}.")
    return found


def problems(data_dir: str | os.PathLike) -> str | None:
    """None when all four files are ready, else one short line for an error: the files missing,
    and why any file in place cannot be used."""
    return hub_messages.short_problems(ENTRIES.values(), data_dir, "Portrait animation", SECTION, APIS)


# ------------------------------------------------------------------ crop, networks, paste back

def face_crop(image: np.ndarray, landmarks) -> tuple[np.ndarray, np.ndarray]:
    """The 512 crop FaceFusion's face_editor takes, and its 2x3 affine (image -> crop)."""
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    wider = (points - points[2]) * LANDMARK_SCALE + points[2]
    return face_align.align(image, wider, FFHQ_512, CROP)


def network_input(crop: np.ndarray) -> np.ndarray:
    """512 RGB uint8 crop -> (1, 3, 256, 256) float32 in [0, 1] (FaceFusion prepare_crop_frame,
    less its BGR->RGB flip: Wimmel's frames are RGB already)."""
    small = cv2.resize(crop, (NET, NET), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small.astype(np.float32).transpose(2, 0, 1)[None] / 255.0)


def extract_motion(graph: Graph, crop: np.ndarray) -> motion.Motion:
    return motion.Motion.from_outputs(graph.run({"input": network_input(crop)}))


def stitch(graph: Graph, driven: np.ndarray, own: np.ndarray) -> np.ndarray:
    """LivePortrait's stitching (FaceFusion's names: source = driven, target = the portrait's own)."""
    out = graph.run({"source": _points(driven), "target": _points(own)})[0]
    return np.asarray(out, np.float64).reshape(motion.KEYPOINTS, 3)


def generate(graph: Graph, volume: np.ndarray, driven: np.ndarray, own: np.ndarray) -> np.ndarray:
    """The portrait's face redrawn with the driven keypoints: uint8 RGB [512, 512, 3]."""
    face = graph.run({"feature_volume": volume, "source": _points(driven), "target": _points(own)})[0][0]
    return np.round(np.clip(face, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)


def _points(points: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(points, np.float32).reshape(1, motion.KEYPOINTS, 3))


def paste(portrait: np.ndarray, face: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return face_align.paste_back(portrait, face, face_align.box_mask(CROP, MASK_BLUR), matrix)


# ------------------------------------------------------------------ the portrait, once

@dataclass(frozen=True)
class Portrait:
    """What the networks need of the portrait, computed once per photo or video job."""
    image: np.ndarray        # uint8 RGB
    matrix: np.ndarray       # image -> its 512 face crop
    volume: np.ndarray       # (1, 32, 16, 64, 64) float32
    motion: motion.Motion

    @property
    def keypoints(self) -> np.ndarray:
        return self.motion.keypoints()


NOT_FOUND = "Faces smaller than about 20 pixels, or turned far away, are not found."


def prepare_portrait(call, image: np.ndarray, landmarks) -> Portrait:
    """The portrait's crop through the feature and motion extractors (one lease each)."""
    crop, matrix = face_crop(image, landmarks)
    tensor = network_input(crop)
    volume = call(FEATURE_EXTRACTOR.name, lambda g: g.run({"input": tensor})[0])
    found = call(MOTION_EXTRACTOR.name, lambda g: motion.Motion.from_outputs(g.run({"input": tensor})))
    return Portrait(image, matrix, np.ascontiguousarray(volume, np.float32), found)


def render(call, portrait: Portrait, driven: list[np.ndarray]) -> np.ndarray:
    """(N, H, W, 3): the portrait with each set of driven keypoints, stitched (one lease) and
    generated (one lease), pasted back."""
    own = portrait.keypoints
    stitched = call(STITCHER.name, lambda g: [stitch(g, points, own) for points in driven])
    faces = call(GENERATOR.name, lambda g: [generate(g, portrait.volume, points, own) for points in stitched])
    return np.stack([paste(portrait.image, face, portrait.matrix) for face in faces])


def animate_photo(call, detector_name: str, image: np.ndarray, driving: np.ndarray,
                  max_pixels: int | None) -> tuple[np.ndarray, dict]:
    """The portrait with the driving photo's head pose and expression (absolute motion, motion.py):
    the largest face of each; the detector, then each network, leased once."""
    image, driving = face_detector.as_rgb(image), face_detector.as_rgb(driving)   # gray or RGBA in, RGB out
    found = call(detector_name, lambda d: (face_align.find_faces(d, image, max_pixels),
                                           face_align.find_faces(d, driving, max_pixels)))
    for faces, what in zip(found, ("portrait", "driving photo")):
        if not faces:
            raise UserFacingError(f"No face was found in the {what}. {NOT_FOUND}")
    portrait = prepare_portrait(call, image, found[0][0]["landmarks"])
    crop, _ = face_crop(driving, found[1][0]["landmarks"])
    driver = call(MOTION_EXTRACTOR.name, functools.partial(extract_motion, crop=crop))
    out = render(call, portrait, [motion.absolute(portrait.motion, driver)])[0]
    pose = lambda m: {"pitch": round(m.pitch, 2), "yaw": round(m.yaw, 2), "roll": round(m.roll, 2)}  # noqa: E731
    return out, {"portrait_pose": pose(portrait.motion), "driving_pose": pose(driver), "motion": "absolute"}
