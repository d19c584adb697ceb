"""Landmarks of every face in a picture: the shared detector finds the faces, the mesh and iris
nets place the points, geometry.py reads pose, openness and gaze; and the picture drawn with them.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from analysers import face_detector
from analysers.face_detector import FACE_DETECTOR
from engine import Call, UserFacingError
from engine.media.image import ImageError, rgb_array
from engine.media.video import limit_pixels

from . import geometry
from .model import FACE_MESH, face_landmarks

NO_FACE = "No face found in the picture."
MIN_SIDE = 16   # smaller than this there is no face to find


class LandmarksInputError(UserFacingError, ValueError):
    """Bad input a user can fix: no picture, an empty or unreadable one."""


def check_image(image) -> np.ndarray:
    """The picture as RGB uint8, or a LandmarksInputError in plain words."""
    try:
        return rgb_array(image, MIN_SIDE)
    except ImageError as exc:
        raise LandmarksInputError(str(exc)) from None


def detect(detector, rgb: np.ndarray, max_pixels: int | None) -> list[dict]:
    """The detector's faces of one picture, found on a copy shrunk to its limit, in its pixels."""
    small, scale = limit_pixels(rgb, max_pixels) if max_pixels else (rgb, 1.0)
    faces = face_detector.detect_faces(detector, small)
    if scale == 1.0:
        return faces
    k = 1.0 / scale
    return [{**f, "box": [v * k for v in f["box"]], "landmarks": [[x * k, y * k] for x, y in f["landmarks"]]}
            for f in faces]


def _points(a: np.ndarray, digits: int = 1) -> list:
    return np.round(np.asarray(a, np.float64), digits).tolist()


def describe_face(face: dict, found: dict, width: int, height: int) -> dict:
    """One face's JSON: the detector's box and score, the mesh, irises, pose, openness, gaze."""
    irises = {side: {"centre": _points(found[f"{side}_iris"][0, :2]), "points": _points(found[f"{side}_iris"][:, :2]),
                     "eyelids": _points(found[f"{side}_eye"][:geometry.EYELID_POINTS, :2])}
              for side in ("left", "right")}
    return {"box": [round(float(v), 1) for v in face["box"]], "score": face["score"],
            "presence": round(found["presence"], 4), **geometry.describe(found, width, height),
            "irises": irises, "mesh": _points(found["mesh"])}


def analyse(call: Call, image: np.ndarray, max_pixels: int | None) -> tuple[list[dict], list[dict]]:
    """(faces as JSON, the raw results drawn by `draw`) of one RGB picture: the detector is
    leased once, then the mesh once for all its faces (a face the mesh does not see is left out)."""
    faces = call(FACE_DETECTOR, lambda detector: detect(detector, image, max_pixels))
    if not faces:
        return [], []
    found = call(FACE_MESH, lambda marker: [face_landmarks(marker, image, face) for face in faces])
    height, width = image.shape[:2]
    pairs = [(face, f) for face, f in zip(faces, found) if f is not None]
    return [describe_face(face, f, width, height) for face, f in pairs], [f for _, f in pairs]


# ---------------------------------------------------------------------------------- drawing

def draw(image: np.ndarray, described: list[dict], found: list[dict]) -> np.ndarray:
    """The picture with each face's mesh (dots), eyelids and irises, and its pose under the box."""
    canvas = Image.fromarray(face_detector.as_rgb(image).copy())
    pen = ImageDraw.Draw(canvas)
    line = max(1, round(min(canvas.size) / 300))   # strokes scale with the picture
    font = ImageFont.load_default(size=max(10, 5 * line))
    for face, raw in zip(described, found):
        box = face["box"]
        size = max(box[2] - box[0], box[3] - box[1])
        dot = max(0.6, size / 300)   # mesh dots scale with the face, so a small face stays readable
        for x, y in raw["mesh"][:, :2]:
            pen.ellipse([x - dot, y - dot, x + dot, y + dot], fill=(0, 220, 120))
        for side in ("left", "right"):
            lids = raw[f"{side}_eye"][:geometry.EYELID_POINTS, :2]
            ring = np.concatenate([lids[:9], lids[9:][::-1], lids[:1]])   # lower lid, upper lid back
            pen.line([tuple(p) for p in ring], fill=(255, 220, 0), width=line)
            iris = raw[f"{side}_iris"][:, :2]
            (cx, cy), r = iris[0], float(np.linalg.norm(iris[1:] - iris[0], axis=1).mean())
            pen.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(0, 160, 255), width=line)
        pose = face["head_pose"]
        label = f"yaw {pose['yaw']:.0f}  pitch {pose['pitch']:.0f}  roll {pose['roll']:.0f}"
        left, top, right, bottom = pen.textbbox((0, 0), label, font=font)
        ty = box[3] + line if box[3] + (bottom - top) + 3 * line <= canvas.height else box[1] - (bottom - top) - 3 * line
        pen.rectangle([box[0], ty, box[0] + right - left + 2 * line, ty + bottom - top + 2 * line], fill=(0, 220, 120))
        pen.text((box[0] + line - left, ty + line - top), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
