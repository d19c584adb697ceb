"""What the mesh says about a face: head pose, eye openness and gaze.

Left and right are the image's (the mesh's "left eye", points 33..133, is the one on the image's
left: the person's right eye in an unmirrored photo). Angles are in degrees.
"""
from __future__ import annotations

import functools
import math
import pathlib

import cv2
import numpy as np

# The 71 mesh points the iris model's eye contour and brow points land on, in its output order:
# UpdateFaceLandmarksCalculator's kEyeLandmarkIndicesInFaceLandmarks (graphs/iris_tracking), the
# same lists as LandmarksRefinementCalculator's eye refinements (face_landmark/
# tensors_to_face_landmarks_with_attention.pbtxt). The first 16: lower lid 9 (corner to corner),
# upper lid 7.
LEFT_EYE_MESH = [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173, 130, 25, 110, 24,
                 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190, 226, 31, 228, 229, 230, 231, 232, 233, 244,
                 113, 225, 224, 223, 222, 221, 189, 35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121,
                 128, 245, 156, 70, 63, 105, 66, 107, 55, 193]
RIGHT_EYE_MESH = [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 359, 255, 339,
                  254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414, 446, 261, 448, 449, 450, 451,
                  452, 453, 464, 342, 445, 444, 443, 442, 441, 413, 265, 353, 276, 283, 282, 295, 372, 340, 346,
                  347, 348, 349, 350, 357, 465, 383, 300, 293, 334, 296, 336, 285, 417]
EYELID_POINTS = 16   # of the 71: the eyelid contour; the rest are halos and the brow

# The six points of the eye aspect ratio (Soukupova & Cech, 2016) on the mesh, in their order
# p1..p6: the image-left corner, two upper-lid points, the image-right corner, two lower-lid points.
EAR_POINTS = {"left": (33, 160, 158, 133, 153, 144), "right": (362, 385, 387, 263, 373, 380)}
# Each eye's image-left and image-right corner, and its upper and lower lid middles.
EYE_CORNERS = {"left": (33, 133), "right": (362, 263)}
EYE_LIDS = {"left": (159, 145), "right": (386, 374)}


@functools.lru_cache(maxsize=1)
def canonical_face() -> np.ndarray:
    """MediaPipe's canonical face model (468, 3), cm, in the camera's axes (x right, y down, z away
    from the camera): the .obj has y up and z towards the viewer."""
    path = pathlib.Path(__file__).with_name("canonical_face_model.txt")
    return np.loadtxt(path, dtype=np.float64) * [1.0, -1.0, -1.0]


def _towards(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the optical axis (0, 0, 1) to the unit vector `direction`."""
    axis = np.cross([0.0, 0.0, 1.0], direction)
    sin, cos = float(np.linalg.norm(axis)), float(direction[2])
    if sin < 1e-9:
        return np.eye(3)
    rvec = axis / sin * math.atan2(sin, cos)
    return cv2.Rodrigues(rvec)[0]


def head_pose(mesh: np.ndarray, width: int, height: int) -> dict:
    """Yaw, pitch and roll of the head relative to the camera's line of sight to it, from the
    mesh's 2D points and the canonical face (cv2.solvePnP; a pinhole camera with its focal length
    the image's long side, about a 53 degree field of view, its centre the image's). All 0 for a
    face looking straight into the camera, wherever it is in the picture.

    yaw > 0: the face turns towards the image's right (the person's left, unmirrored);
    pitch > 0: the face tilts up; roll > 0: the head leans clockwise as seen in the image.
    """
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    model = canonical_face()
    # A first guess 50 cm in front of the camera keeps the iteration away from the mirror pose.
    ok, rvec, tvec = cv2.solvePnP(model, np.ascontiguousarray(mesh[:, :2], np.float64), camera, None,
                                  flags=cv2.SOLVEPNP_ITERATIVE, useExtrinsicGuess=True,
                                  rvec=np.zeros((3, 1)), tvec=np.array([[0.0], [0.0], [50.0]]))
    # Facing the camera means facing along the ray to the face, not along the optical axis: a
    # face high in the frame looking at the lens is tilted down by the ray's angle.
    ray = tvec[:, 0] / np.linalg.norm(tvec)
    r = _towards(ray).T @ cv2.Rodrigues(rvec)[0]
    # r = Rz(roll) @ Ry(yaw') @ Rx(pitch'), camera axes.
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -r[2, 0]))))
    pitch = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    # Ry(+) turns the nose (-z) towards -x, the image's left; Rx(+) turns it to +y, down.
    return {"yaw": round(-yaw, 2), "pitch": round(-pitch, 2), "roll": round(roll, 2)}


def eye_aspect_ratio(mesh: np.ndarray, side: str) -> float:
    """(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|): about 0.25 to 0.35 for an open eye, near 0 closed."""
    p1, p2, p3, p4, p5, p6 = (mesh[i, :2] for i in EAR_POINTS[side])
    width = np.linalg.norm(p1 - p4)
    if width == 0:
        return 0.0
    return float((np.linalg.norm(p2 - p6) + np.linalg.norm(p3 - p5)) / (2 * width))


def gaze(mesh: np.ndarray, iris: np.ndarray, side: str) -> dict:
    """The iris centre within one eye, in the eye's own frame (its corner-to-corner line):
    horizontal -1 at the image-left corner, 0 half-way, +1 at the image-right corner; vertical, in
    eye widths from the middle of the lids, > 0 lower in the image."""
    a, b = (mesh[i, :2] for i in EYE_CORNERS[side])
    upper, lower = (mesh[i, :2] for i in EYE_LIDS[side])
    axis = b - a
    width = float(np.linalg.norm(axis))
    if width == 0:
        return {"horizontal": 0.0, "vertical": 0.0}
    along = axis / width
    normal = np.array([-along[1], along[0]])  # the axis turned a quarter clockwise: down in the image
    centre = iris[0, :2]
    horizontal = 2 * float((centre - (a + b) / 2) @ along) / width
    vertical = float((centre - (upper + lower) / 2) @ normal) / width
    return {"horizontal": round(horizontal, 3), "vertical": round(vertical, 3)}


def describe(found: dict, width: int, height: int) -> dict:
    """Pose, openness and gaze of one face found by model.face_landmarks."""
    mesh = found["mesh"]
    openness = {side: round(eye_aspect_ratio(mesh, side), 3) for side in ("left", "right")}
    looks = {side: gaze(mesh, found[f"{side}_iris"], side) for side in ("left", "right")}
    both = {k: round((looks["left"][k] + looks["right"][k]) / 2, 3) for k in ("horizontal", "vertical")}
    return {"head_pose": head_pose(mesh, width, height), "eye_openness": openness,
            "gaze": {**both, "left": looks["left"], "right": looks["right"]}}
