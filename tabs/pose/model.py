"""Body pose: MediaPipe's pose detector and its 33-point pose landmarker (BlazePose, the "full"
landmark model), as one model of two networks.

Both .tflite files come from the mediapipe 0.10.21 wheel (installed --no-deps for its files only;
mediapipe itself is never imported). engine.runtimes.tflite rebuilds each graph in torch
(tests/test_tflite_models.py holds them to LiteRT's outputs); each is exported to ONNX once and run
on ONNX Runtime, eager torch where the export fails. The pre/post-processing is geometry.py's,
every constant from MediaPipe's graphs.

Several people: MediaPipe's legacy graph (pose_landmark_cpu.pbtxt) takes the first detection
only; its Tasks PoseLandmarker (tasks/cc/vision/pose_detector/pose_detector_graph.cc) keeps up to
`num_poses` detections after NMS and runs the landmarker on each. We do the latter, with the
legacy graph's constants (NMS IoU 0.3): every detection over the score threshold, at most
MAX_PEOPLE, each person's landmarks from its own ROI, a person kept when its pose flag is >= 0.5.
"""
from __future__ import annotations

import functools
import os
import pathlib

import numpy as np

from analysers import mediapipe_ssd
from engine import Call, ModelSpec, UserFacingError
from engine.media.image import ImageError, rgb_array
from engine.requests import number_from
from engine.package_files import package_folder
from engine.runtimes.compiled import serve_plan
from engine.runtimes.tflite import TFLiteNet, export_key

from . import geometry as geo
from .skeleton import NAMES

MiB = 1024**2

POSE_MODEL = "mediapipe-pose"
MAX_PEOPLE = 10        # Tasks' num_poses, here a bound on the time one picture may take
MIN_SIDE = 16

_FILES = {"detector": ("modules/pose_detection", "pose_detection.tflite"),
          "landmarker": ("modules/pose_landmark", "pose_landmark_full.tflite")}
_MISSING = ("mediapipe is not installed: run ./setup.sh (it installs mediapipe==0.10.21 with "
            "--no-deps, only for its pose_detection.tflite and pose_landmark_full.tflite weights)")


class PoseInputError(UserFacingError, ValueError):
    """Bad input a user can fix: no, empty or tiny picture, a bad threshold."""


# ---------------------------------------------------------------------------------- loading

def model_path(which: str) -> pathlib.Path:
    folder, name = _FILES[which]
    return package_folder("mediapipe", folder, [name], _MISSING) / name


def unavailable_reason() -> str | None:
    try:
        for which in _FILES:
            model_path(which)
    except FileNotFoundError as exc:
        return str(exc)
    return None


class PoseModel:
    """The detector and the landmarker, leased together."""

    def __init__(self, device: str = "cpu", accelerate: str | None = "onnx", cache_dir=None):
        self.detector, self.landmarker = (TFLiteNet(model_path(which), device, accelerate, cache_dir,
                                                    export_key(f"pose-{which}")) for which in ("detector", "landmarker"))

    @property
    def runtime(self) -> str:
        return self.detector.runtime if self.detector.runtime == self.landmarker.runtime else "mixed"

    def detect(self, x: np.ndarray, padding, width: int, height: int, min_score: float) -> list[geo.Detection]:
        boxes, scores = self.detector(x)
        return mediapipe_ssd.decode(geo.DETECTOR, boxes, scores, padding, width, height, min_score)[:MAX_PEOPLE]


def load(device: str = "cpu", accelerate: str | None = "onnx", cache_dir: str | os.PathLike | None = None) -> PoseModel:
    """Both nets on `device`, run by ONNX Runtime (accelerate "onnx", exported once and cached in
    `cache_dir`, default engine.runtimes.compiled.default_cache_dir()) or eager (None / "eager")."""
    return PoseModel(device, accelerate, cache_dir)


def prepare(cache_dir: str | os.PathLike | None = None) -> dict:
    """Set-up's hook: export both nets to ONNX now (or find them cached)."""
    model = load("cpu", "onnx", cache_dir)
    return {"detector": model.detector.net.info.as_dict(), "landmarker": model.landmarker.net.info.as_dict()}


def specs() -> list[ModelSpec]:
    plan = serve_plan()
    return [ModelSpec(
        name=POSE_MODEL, role="interactive", runtime=plan.runtime,
        loader=functools.partial(load, accelerate=plan.mode),
        device=plan.device,
        source="mediapipe 0.10.21 wheel: modules/pose_detection/pose_detection.tflite + "
               "modules/pose_landmark/pose_landmark_full.tflite (Apache-2.0)",
        # Measured on CPU, ONNX files cached: a load adds 90-120 MiB RSS (two sessions, and the
        # torch graphs kept to check them and to fall back on), the first run ~20 MiB, later ones
        # nothing: the nets always see 224x224 and 256x256, whatever the picture's size.
        estimate_bytes=128 * MiB, run_estimate_bytes=24 * MiB,
        function="body pose (33 landmarks per person)", networks=2,
        description="MediaPipe BlazePose: person detector (224x224) + full landmark model (256x256, "
                    "33 points, world coordinates)")]


# ---------------------------------------------------------------------------------- inputs

def check_image(image) -> np.ndarray:
    """An RGB uint8 picture, or a PoseInputError saying what is wrong."""
    try:
        return rgb_array(image, MIN_SIDE)
    except ImageError as exc:
        raise PoseInputError(str(exc)) from None


def check_threshold(value) -> float:
    return number_from(value, 0.05, 0.95, "detection threshold", default=geo.MIN_SCORE, error=PoseInputError)


# ---------------------------------------------------------------------------------- poses

def find_poses(model: PoseModel, rgb: np.ndarray, min_score: float = geo.MIN_SCORE,
               segmentation: bool = False) -> list[dict]:
    """Every person's pose in an RGB uint8 picture, best detection first (see `pose_json`); with
    `segmentation`, each also has "mask": P(person) over the picture, float32 (H, W)."""
    height, width = rgb.shape[:2]
    x, padding = mediapipe_ssd.letterbox(rgb, geo.DETECTOR)
    poses = []
    for det in model.detect(x, padding, width, height, min_score):
        roi = geo.roi_from_detection(det)
        if roi.width < 1:
            continue
        outputs = model.landmarker(geo.landmark_input(rgb, roi))
        pose = geo.decode_landmarks(outputs, roi)
        if pose is None:
            continue
        pose.update(detection=det, roi=roi)
        if segmentation:
            pose["mask"] = geo.segmentation_to_picture(outputs[2], roi, width, height)
        poses.append(pose)
    return poses


def poses_in(call: Call, rgb: np.ndarray, min_score: float = geo.MIN_SCORE) -> list[dict]:
    """find_poses with the model leased through `call` for the whole picture."""
    return call(POSE_MODEL, lambda model: find_poses(model, rgb, min_score))


def _r(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


def pose_json(pose: dict) -> dict:
    """One person as JSON: detection score, the detector's box (around the face, pixels), pose
    presence, and the 33 landmarks by MediaPipe's names (PoseLandmark, lower case): x, y in
    pixels, z on x's scale (smaller is nearer the camera, 0 at the hips), visibility and presence
    (0..1); "world": the same points in metres around the hips."""
    det = pose["detection"]
    return {
        "score": _r(det.score, 3), "box": [_r(v, 1) for v in det.box], "presence": _r(pose["presence"], 3),
        "keypoints": [{"name": name, "x": _r(p[0], 1), "y": _r(p[1], 1), "z": _r(p[2], 1),
                       "visibility": _r(p[3], 3), "presence": _r(p[4], 3)}
                      for name, p in zip(NAMES, pose["points"])],
        "world": [{"name": name, "x": _r(w[0], 3), "y": _r(w[1], 3), "z": _r(w[2], 3)}
                  for name, w in zip(NAMES, pose["world"])],
    }
