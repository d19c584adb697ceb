"""The 21 hand landmarks' names and bones as MediaPipe has them (python/solutions/hands.py
HandLandmark, hands_connections.py HAND_CONNECTIONS, 0.10.21 wheel), the gesture rules, and the
drawing of hands on a picture.

Gestures are read from the 21 points alone (x, y, z in pixels), so they hold whatever the hand's
turn in the picture:
- a finger (index..pinky) is *extended* when it is straight (the bend between MCP->PIP and
  PIP->tip under 50 degrees) and its tip lies farther from the wrist than its PIP; *folded*
  otherwise;
- the thumb is *extended* when it is straight (CMC->MCP vs MCP->tip under 40 degrees), its tip
  lies farther from the pinky's MCP than its IP does (not folded across the palm), and farther
  than 0.4 palm from the index MCP (palm: wrist to middle MCP; handDst.jpg's thumb, out of the
  photo's top edge, is at 0.55);
- open palm: all five extended; fist: none; pointing: only the index (thumb either way);
  victory: index and middle, ring and pinky folded (thumb either way); thumbs up: only the thumb,
  and it points up in the picture (within 45 degrees); ok: thumb and index tips closer than 0.35
  palm, middle, ring and pinky extended. Anything else has no name (None).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

NAMES = [
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_finger_mcp", "index_finger_pip", "index_finger_dip", "index_finger_tip",
    "middle_finger_mcp", "middle_finger_pip", "middle_finger_dip", "middle_finger_tip",
    "ring_finger_mcp", "ring_finger_pip", "ring_finger_dip", "ring_finger_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
]
INDEX = {name: i for i, name in enumerate(NAMES)}
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
TIPS = (4, 8, 12, 16, 20)
CONNECTIONS = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
               (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20)]
GESTURES = ("open palm", "fist", "pointing", "victory", "thumbs up", "ok")

FINGER_BEND = 50.0      # degrees
THUMB_BEND = 40.0
THUMB_OUT = 0.4         # palms from the index MCP
OK_TOUCH = 0.35         # palms between thumb and index tips
THUMB_UP = 45.0         # degrees from straight up


def _bend(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """The angle between a->b and b->c, degrees (0: straight)."""
    u, v = b - a, c - b
    cos = float(u @ v) / max(1e-9, float(np.linalg.norm(u) * np.linalg.norm(v)))
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def palm_size(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[9] - points[0]))


def finger_states(points: np.ndarray) -> dict[str, bool]:
    """{finger: extended} for the five fingers of one hand's (21, 3) points."""
    p = np.asarray(points, np.float64)[:, :3]
    palm = max(1e-9, palm_size(p))
    states = {"thumb": (_bend(p[1], p[2], p[4]) < THUMB_BEND and np.linalg.norm(p[4] - p[5]) > THUMB_OUT * palm
                        and np.linalg.norm(p[4] - p[17]) > np.linalg.norm(p[3] - p[17]))}
    for name, mcp in zip(FINGERS[1:], (5, 9, 13, 17)):
        pip, tip = mcp + 1, mcp + 3
        states[name] = bool(_bend(p[mcp], p[pip], p[tip]) < FINGER_BEND
                            and np.linalg.norm(p[tip] - p[0]) > np.linalg.norm(p[pip] - p[0]))
    return {k: bool(v) for k, v in states.items()}


def gesture(points: np.ndarray) -> str | None:
    """The gesture's name (GESTURES) by the rules in this module's docstring, or None."""
    p = np.asarray(points, np.float64)[:, :3]
    s = finger_states(p)
    fingers = [s[f] for f in FINGERS[1:]]
    if s["thumb"] and all(fingers):
        return "open palm"
    if not s["thumb"] and not any(fingers):
        return "fist"
    if np.linalg.norm(p[4] - p[8]) < OK_TOUCH * palm_size(p) and s["middle"] and s["ring"] and s["pinky"]:
        return "ok"
    if fingers == [True, False, False, False]:
        return "pointing"
    if fingers == [True, True, False, False]:
        return "victory"
    if s["thumb"] and not any(fingers):
        dx, dy = p[4, :2] - p[2, :2]
        if math.degrees(math.atan2(abs(dx), -dy)) < THUMB_UP:
            return "thumbs up"
    return None


# Left hands orange, right hands cyan (the person's own side); the palm's bones white.
LEFT, RIGHT, PALM = (255, 138, 0), (0, 217, 231), (255, 255, 255)
_PALM_BONES = {(0, 1), (0, 5), (5, 9), (9, 13), (13, 17), (0, 17)}


def draw_hands(image: np.ndarray, hands: list[dict], boxes: bool = True) -> np.ndarray:
    """The picture with each hand's 21 points and bones, and with `boxes` the palm detector's box
    with the hand's number, side and gesture."""
    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(picture)
    size = max(picture.size)
    width, radius = max(2, round(size / 300)), max(2, round(size / 200))
    for n, hand in enumerate(hands, 1):
        points = hand["points"]
        colour = LEFT if hand["handedness"] == "left" else RIGHT
        for a, b in CONNECTIONS:
            draw.line([tuple(points[a][:2]), tuple(points[b][:2])],
                      fill=PALM if (a, b) in _PALM_BONES else colour, width=width)
        for x, y in points[:, :2]:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))
        if boxes:
            x1, y1, x2, y2 = hand["detection"].box
            draw.rectangle([x1, y1, x2, y2], outline=(255, 255, 0), width=max(1, width // 2))
            label = f"{n}: {hand['handedness']}" + (f", {hand['gesture']}" if hand["gesture"] else "")
            draw.text((x1 + 2, max(0, y1 - 12)), label, fill=(255, 255, 0))
    return np.asarray(picture)
