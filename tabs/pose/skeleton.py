"""The 33 pose landmarks' names and the skeleton's bones, as MediaPipe has them
(mediapipe/python/solutions/pose.py PoseLandmark, pose_connections.py POSE_CONNECTIONS, in the
0.10.21 wheel), and the drawing of poses on a picture."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

NAMES = [
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
]
INDEX = {name: i for i, name in enumerate(NAMES)}

CONNECTIONS = sorted([
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13),
    (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20),
    (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32)])

# A point is drawn where MediaPipe's drawing_utils draws it: visibility and presence both >= 0.5
# (_VISIBILITY_THRESHOLD, _PRESENCE_THRESHOLD there).
DRAW_THRESHOLD = 0.5
# The person's left side orange, right side cyan, the middle white (drawing_styles' pose style
# colours left and right apart the same way).
LEFT, RIGHT, MIDDLE = (255, 138, 0), (0, 217, 231), (255, 255, 255)


def _side(i: int) -> tuple[int, int, int]:
    name = NAMES[i]
    return LEFT if name.startswith(("left", "mouth_left")) else RIGHT if name.startswith(("right", "mouth_right")) else MIDDLE


def shown(point: np.ndarray) -> bool:
    return point[3] >= DRAW_THRESHOLD and point[4] >= DRAW_THRESHOLD


def draw_poses(image: np.ndarray, poses: list[dict], boxes: bool = True) -> np.ndarray:
    """The picture with each person's skeleton drawn (bones between points in view, points
    coloured by side), and, with `boxes`, the detector's box and score. Line widths follow the
    picture's size."""
    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(picture)
    size = max(picture.size)
    width = max(2, round(size / 300))
    radius = max(2, round(size / 200))
    for n, pose in enumerate(poses, 1):
        points = pose["points"]
        for a, b in CONNECTIONS:
            if shown(points[a]) and shown(points[b]):
                colour = _side(a) if _side(a) == _side(b) else MIDDLE
                draw.line([tuple(points[a][:2]), tuple(points[b][:2])], fill=colour, width=width)
        for i, p in enumerate(points):
            if shown(p):
                x, y = p[:2]
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=_side(i), outline=(0, 0, 0))
        if boxes:
            x1, y1, x2, y2 = pose["detection"].box
            draw.rectangle([x1, y1, x2, y2], outline=(255, 255, 0), width=max(1, width // 2))
            draw.text((x1 + 2, max(0, y1 - 12)), f"{n}: {pose['detection'].score:.2f}", fill=(255, 255, 0))
    return np.asarray(picture)
