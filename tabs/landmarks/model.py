"""Face landmarks: MediaPipe's 468-point face mesh and its iris model on each face that the shared
face detector (MTCNN) finds.

The nets are the mediapipe 0.10.21 wheel's face_landmark/face_landmark.tflite and
iris_landmark/iris_landmark.tflite (mediapipe itself is never imported), rebuilt in torch by
engine.runtimes.tflite, exported to ONNX once and run on ONNX Runtime (eager torch where the
export fails). Every pre- and post-processing fact below comes from MediaPipe's graphs (repository
google-ai-edge/mediapipe, mediapipe/modules/...):

- The face ROI, face_landmark/face_detection_front_detection_to_roi.pbtxt: the detection's box,
  rotated by the angle of the line from keypoint 0 (left eye) to keypoint 1 (right eye), target
  angle 0 (DetectionsToRectsCalculator: rotation = target - atan2(-(y1 - y0), x1 - x0)); then
  RectTransformationCalculator square_long, scale 1.5. MTCNN's first two landmarks are those eyes.
- The mesh, face_landmark/face_landmark_cpu.pbtxt: ImageToTensorCalculator 192x192, float range
  [0, 1], border REPLICATE (its proto's default); output 0 is 468 x (x, y, z) in the 192 px crop
  (TensorsToLandmarksCalculator: x / 192, y / 192, z / 192), output 1 the face flag, SIGMOID,
  ThresholdingCalculator 0.5 gates the landmarks. LandmarkProjectionCalculator maps them back
  through the ROI (rotation about its centre, scale by its size; z scaled as x).
- The irises, iris_landmark/iris_landmark_landmarks_to_roi.pbtxt and iris_landmark_cpu.pbtxt,
  with the eye corners the iris-tracking graph gives them (graphs/iris_tracking/
  iris_tracking_cpu.pbtxt: mesh points 33, 133 for the left eye, 362, 263 for the right): the
  ROI is the corners' box, rotated by the corner-to-corner angle, square_long, scale 2.3; the
  crop (BORDER_REPLICATE) is resized to 64x64, [0, 1] (zero_center false), mirrored for the right
  eye (and its landmarks mirrored back: x = 64 - x); output 0 is 71 eye-contour and brow points,
  output 1 the iris's 5 (centre, then its edges), both in 64 px.
- UpdateFaceLandmarksCalculator (graphs/iris_tracking/calculators) writes the iris model's 71 eye
  points over the mesh's: the eyelids the eye openness is measured on are the finer model's.

face_landmark_with_attention.tflite (mesh + refined lips, eyes and irises, 478 points) is the same
function in one net. We keep the plain mesh, because the iris model runs after it anyway (its
eye contour and irises are what attention's refinements would add): on ONNX Runtime, 2 CPU cores,
the plain mesh took 5-8 ms a face against attention's 10.5 ms (medians of 40), its file is half
the size (1.2 against 2.5 MB), and the two meshes agree within 2.3% of the face box's width (mean
point distance, median over 60 LFW faces). See geometry.py for pose, openness and gaze.
"""
from __future__ import annotations

import functools
import math
import os
import pathlib

import cv2
import numpy as np

from engine import ModelSpec
from engine.package_files import package_folder
from engine.runtimes.compiled import serve_plan
from engine.runtimes.tflite import TFLiteNet, export_key

from . import geometry

MiB = 1024**2
FACE_MESH = "face-mesh"

MESH_SIZE = 192        # face_landmark_cpu.pbtxt: output_tensor_width / height
IRIS_SIZE = 64         # iris_landmark_cpu.pbtxt: ImageTransformationCalculator output 64x64
FACE_ROI_SCALE = 1.5   # face_detection_front_detection_to_roi.pbtxt: scale_x / scale_y
EYE_ROI_SCALE = 2.3    # iris_landmark_landmarks_to_roi.pbtxt: scale_x / scale_y
PRESENCE = 0.5         # face_landmark_cpu.pbtxt: ThresholdingCalculator threshold on sigmoid(flag)
LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS = (33, 133), (362, 263)   # iris_tracking_cpu.pbtxt

_FILES = {"mesh": ("face_landmark", "face_landmark.tflite"), "iris": ("iris_landmark", "iris_landmark.tflite")}
_MISSING = ("mediapipe is not installed: run ./setup.sh (it installs mediapipe==0.10.21 with "
            "--no-deps, only for its .tflite weights)")


def model_path(which: str) -> pathlib.Path:
    folder, name = _FILES[which]
    return package_folder("mediapipe", f"modules/{folder}", [name], _MISSING) / name


def unavailable_reason() -> str | None:
    try:
        for which in _FILES:
            model_path(which)
    except FileNotFoundError as exc:
        return str(exc)
    return None


class Landmarker:
    """The mesh and iris nets, one lease for both: `mesh(crop)` and `iris(crop)` take one
    (size, size, 3) float32 crop in [0, 1] and give the net's raw outputs as numpy."""

    def __init__(self, device: str = "cpu", accelerate: str | None = "onnx",
                 cache_dir: str | os.PathLike | None = None):
        # Fixed 1x192x192x3 / 1x64x64x3 inputs: static exports, small-net threads (engine.runtimes.tflite).
        self.nets = {which: TFLiteNet(model_path(which), device, accelerate, cache_dir,
                                      export_key(_FILES[which][1][:-7])) for which in _FILES}

    @property
    def runtime(self) -> str:
        modes = {net.runtime for net in self.nets.values()}
        return "onnxruntime" if modes == {"onnxruntime"} else "torch"

    def _run(self, which: str, crop: np.ndarray) -> list[np.ndarray]:
        return [t.reshape(-1) for t in self.nets[which](crop)]

    def mesh(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """(468, 3) landmarks in crop pixels, and the face presence (sigmoid of the flag)."""
        points, flag = self._run("mesh", crop)
        return points.reshape(468, 3), float(1.0 / (1.0 + math.exp(-float(flag[0]))))

    def iris(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(71, 3) eye contour and brow points, (5, 3) iris points, in crop pixels."""
        contour, iris = self._run("iris", crop)
        return contour.reshape(71, 3), iris.reshape(5, 3)


def load(device: str = "cpu", accelerate: str | None = "onnx",
         cache_dir: str | os.PathLike | None = None) -> Landmarker:
    return Landmarker(device, accelerate, cache_dir)


def prepare(cache_dir: str | os.PathLike | None = None) -> dict:
    """Set-up's hook: export both nets to ONNX now (or find them cached)."""
    marker = load("cpu", "onnx", cache_dir)
    return {which: net.net.info.as_dict() for which, net in marker.nets.items()}


def specs() -> list[ModelSpec]:
    plan = serve_plan()
    return [ModelSpec(
        name=FACE_MESH, role="interactive", runtime=plan.runtime,
        loader=functools.partial(load, accelerate=plan.mode),
        device=plan.device,
        source="mediapipe 0.10.21 wheel: modules/face_landmark/face_landmark.tflite, "
               "modules/iris_landmark/iris_landmark.tflite",
        # Measured on CPU, the ONNX files cached: a load adds 20 MiB RSS (both sessions and the
        # torch graphs that checked them); a run only crops of 192 and 64 px.
        estimate_bytes=24 * MiB, run_estimate_bytes=4 * MiB,
        function="face mesh and irises (468 + 2x5 points)", networks=2,
        description="MediaPipe face mesh (468 points, 192x192) and iris landmarks (64x64)")]


# ---------------------------------------------------------------------------------- ROIs

def roi(points: np.ndarray, start: int, end: int, scale: float) -> tuple[float, float, float, float]:
    """(centre x, centre y, side, rotation) in image pixels of MediaPipe's ROI around `points`
    ((N, 2), their axis-aligned box) rotated by the angle from points[start] to points[end]:
    DetectionsToRectsCalculator (target angle 0) then RectTransformationCalculator (square_long)."""
    x0, y0 = points[start]
    x1, y1 = points[end]
    rotation = -math.atan2(-(y1 - y0), x1 - x0)
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, float(max(hi - lo)) * scale, rotation)


def face_roi(face: dict) -> tuple[float, float, float, float]:
    """The mesh's ROI from a detector face ({"box", "landmarks"}): its box, rotated by its eyes."""
    x1, y1, x2, y2 = face["box"]
    (lx, ly), (rx, ry) = face["landmarks"][:2]
    rotation = -math.atan2(-(ry - ly), rx - lx)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx, cy, max(x2 - x1, y2 - y1) * FACE_ROI_SCALE, rotation


def _to_image(rect, size: int) -> np.ndarray:
    """The 2x3 affine map from crop pixels (0..size) to image pixels (continuous coordinates)."""
    cx, cy, side, rotation = rect
    c, s = math.cos(rotation), math.sin(rotation)
    k = side / size
    # p = centre + R @ (u - size / 2) * k   (LandmarkProjectionCalculator, in pixels)
    return np.array([[c * k, -s * k, cx - (c - s) * side / 2],
                     [s * k, c * k, cy - (s + c) * side / 2]])


def crop(rgb: np.ndarray, rect, size: int, mirror: bool = False) -> np.ndarray:
    """The ROI as a (size, size, 3) float32 crop in [0, 1], edges replicated, optionally mirrored
    (ImageToTensorCalculator / ImageCroppingCalculator; warpAffine's pixel centres sit at integers)."""
    m = _to_image(rect, size)
    # dst pixel (u, v) has its centre at u + 0.5; src centres at integer coordinates.
    m[:, 2] += m[:, :2] @ [0.5, 0.5] - 0.5
    out = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    if mirror:
        out = out[:, ::-1]
    return out.astype(np.float32) / 255.0


def project(points: np.ndarray, rect, size: int, mirror: bool = False) -> np.ndarray:
    """(N, 3) net points in crop pixels -> image pixels; z scaled as x (pixels of the image)."""
    pts = np.array(points, np.float64)
    if mirror:
        pts[:, 0] = size - pts[:, 0]   # TensorsToLandmarksCalculator flip_horizontally
    m = _to_image(rect, size)
    xy = pts[:, :2] @ m[:, :2].T + m[:, 2]
    return np.column_stack([xy, pts[:, 2] * rect[2] / size])


# ---------------------------------------------------------------------------------- one face

def face_landmarks(marker: Landmarker, rgb: np.ndarray, face: dict) -> dict | None:
    """The mesh (468, 3) with its eye points refined, both irises (5, 3) and eye contours (71, 3),
    all in image pixels, and the face presence; None when the mesh says there is no face there."""
    rect = face_roi(face)
    raw, presence = marker.mesh(crop(rgb, rect, MESH_SIZE))
    if presence < PRESENCE:
        return None
    mesh = project(raw, rect, MESH_SIZE)
    out = {"mesh": mesh, "presence": presence, "roi": rect}
    for side, corners, mirror in (("left", LEFT_EYE_CORNERS, False), ("right", RIGHT_EYE_CORNERS, True)):
        eye_rect = roi(mesh[list(corners), :2], 0, 1, EYE_ROI_SCALE)
        contour, iris = marker.iris(crop(rgb, eye_rect, IRIS_SIZE, mirror))
        contour = project(contour, eye_rect, IRIS_SIZE, mirror)
        iris = project(iris, eye_rect, IRIS_SIZE, mirror)
        indices = geometry.LEFT_EYE_MESH if side == "left" else geometry.RIGHT_EYE_MESH
        # UpdateFaceLandmarksCalculator: the iris model's eye points replace the mesh's.
        mesh[indices] = contour
        out[f"{side}_iris"], out[f"{side}_eye"] = iris, contour
    return out
