"""Hands: MediaPipe's palm detector and its 21-point hand landmarker, as one model of two networks.

Both .tflite files come from the mediapipe 0.10.21 wheel (installed --no-deps for its files only;
mediapipe itself is never imported). engine.runtimes.tflite rebuilds each graph in torch
(tests/test_tflite_models.py holds them to LiteRT's outputs); each is exported to ONNX once and run
on ONNX Runtime, eager torch where the export fails. The pre/post-processing is geometry.py's,
every constant from MediaPipe's graphs; the gesture rules are skeleton.py's.

Variants: palm_detection_full and hand_landmark_full (MediaPipe's model_complexity 1, its
default), chosen by measurement on the four real photos of tests/data/hands (CPU, ONNX Runtime):
both variants find every hand, but the full pair's palm scores are higher (0.989-0.997 against
0.973-0.993), the lite detector gives a false palm on skimage's cat (0.60, which the landmarker's
flag then drops), and a photo's points agree with its mirror image's to a median 0.8-2.7 px
against 1.7-4.1 px for the lite pair; the full pair costs 29 ms a photo against 23 ms.

Several hands: as MediaPipe's Tasks HandLandmarker (hand_landmarker_graph.cc): every palm over the
threshold after NMS (at most MAX_HANDS), the landmarker on each palm's ROI, a hand kept when its
flag is >= 0.5, duplicates of one hand dropped (geometry.duplicates).
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
from .skeleton import NAMES, finger_states, gesture

MiB = 1024**2

HANDS_MODEL = "mediapipe-hands"
MAX_HANDS = 8          # a bound on the time one picture may take (Tasks' num_hands)
MIN_SIDE = 16

DETECTOR, LANDMARKER = "full", "full"
_FILES = {"detector": "modules/palm_detection/palm_detection_{}.tflite",
          "landmarker": "modules/hand_landmark/hand_landmark_{}.tflite"}
_MISSING = ("mediapipe is not installed: run ./setup.sh (it installs mediapipe==0.10.21 with "
            "--no-deps, only for its palm_detection and hand_landmark .tflite weights)")


class HandsInputError(UserFacingError, ValueError):
    """Bad input a user can fix: no, empty or tiny picture, a bad threshold."""


# ---------------------------------------------------------------------------------- loading

def model_path(which: str, variant: str | None = None) -> pathlib.Path:
    variant = variant or (DETECTOR if which == "detector" else LANDMARKER)
    folder, name = _FILES[which].format(variant).rsplit("/", 1)
    return package_folder("mediapipe", folder, [name], _MISSING) / name


def unavailable_reason() -> str | None:
    try:
        for which in _FILES:
            model_path(which)
    except FileNotFoundError as exc:
        return str(exc)
    return None


class HandsModel:
    """The palm detector and the hand landmarker, leased together."""

    def __init__(self, device: str = "cpu", accelerate: str | None = "onnx", cache_dir=None,
                 detector: str = DETECTOR, landmarker: str = LANDMARKER):
        self.detector = TFLiteNet(model_path("detector", detector), device, accelerate, cache_dir,
                                  export_key(f"palm_detection_{detector}"))
        self.landmarker = TFLiteNet(model_path("landmarker", landmarker), device, accelerate, cache_dir,
                                    export_key(f"hand_landmark_{landmarker}"))

    @property
    def runtime(self) -> str:
        return self.detector.runtime if self.detector.runtime == self.landmarker.runtime else "mixed"

    def detect(self, rgb: np.ndarray, min_score: float) -> list[geo.Detection]:
        x, padding = mediapipe_ssd.letterbox(rgb, geo.DETECTOR)
        boxes, scores = self.detector(x)
        return mediapipe_ssd.decode(geo.DETECTOR, boxes, scores, padding, rgb.shape[1], rgb.shape[0], min_score)[:MAX_HANDS]


def load(device: str = "cpu", accelerate: str | None = "onnx", cache_dir: str | os.PathLike | None = None,
         **variants) -> HandsModel:
    """Both nets on `device`, run by ONNX Runtime (accelerate "onnx", exported once and cached in
    `cache_dir`, default engine.runtimes.compiled.default_cache_dir()) or eager (None / "eager").
    `variants`: detector= / landmarker= "lite" or "full" (default full, for measurements)."""
    return HandsModel(device, accelerate, cache_dir, **variants)


def prepare(cache_dir: str | os.PathLike | None = None) -> dict:
    """Set-up's hook: export both nets to ONNX now (or find them cached)."""
    model = load("cpu", "onnx", cache_dir)
    return {"detector": model.detector.net.info.as_dict(), "landmarker": model.landmarker.net.info.as_dict()}


def specs() -> list[ModelSpec]:
    plan = serve_plan()
    return [ModelSpec(
        name=HANDS_MODEL, role="interactive", runtime=plan.runtime,
        loader=functools.partial(load, accelerate=plan.mode),
        device=plan.device,
        source="mediapipe 0.10.21 wheel: modules/palm_detection/palm_detection_full.tflite + "
               "modules/hand_landmark/hand_landmark_full.tflite (Apache-2.0)",
        # Measured on CPU, ONNX files cached: a load adds 108-113 MiB RSS (two sessions, and the
        # torch graphs kept to check them and to fall back on), the first run ~1 MiB, later ones
        # nothing: the nets always see 192x192 and 224x224, whatever the picture's size.
        estimate_bytes=128 * MiB, run_estimate_bytes=8 * MiB,
        function="hand detection and 21 hand landmarks", networks=2,
        description="MediaPipe Hands: palm detector (192x192) + full hand landmark model (224x224, "
                    "21 points, handedness, world coordinates)")]


# ---------------------------------------------------------------------------------- inputs

def check_image(image) -> np.ndarray:
    """An RGB uint8 picture, or a HandsInputError saying what is wrong."""
    try:
        return rgb_array(image, MIN_SIDE)
    except ImageError as exc:
        raise HandsInputError(str(exc)) from None


def check_threshold(value) -> float:
    return number_from(value, 0.05, 0.95, "detection threshold", default=geo.MIN_SCORE, error=HandsInputError)


# ---------------------------------------------------------------------------------- hands

def find_hands(model: HandsModel, rgb: np.ndarray, min_score: float = geo.MIN_SCORE) -> list[dict]:
    """Every hand in an RGB uint8 picture, best palm first: {"detection", "roi", "presence",
    "points" (21, 3), "world" (21, 3), "handedness" ("left"/"right": the person's own hand in an
    ordinary, unmirrored photo), "handedness_score", "fingers" ({finger: extended}), "gesture"}."""
    hands = []
    for det in model.detect(rgb, min_score):
        roi = geo.roi_from_detection(det)
        if roi.width < 1:
            continue
        hand = geo.decode_landmarks(model.landmarker(geo.landmark_input(rgb, roi)), roi)
        if hand is None:
            continue
        # MediaPipe's "Left" is for a mirrored (selfie) picture: in a plain photo it is a right hand.
        right = hand["left_score"]
        hand.update(detection=det, roi=roi, handedness="right" if right >= 0.5 else "left",
                    handedness_score=max(right, 1 - right), fingers=finger_states(hand["points"]),
                    gesture=gesture(hand["points"]))
        hands.append(hand)
    dropped = geo.duplicates(hands)
    return [h for i, h in enumerate(hands) if i not in dropped]


def hands_in(call: Call, rgb: np.ndarray, min_score: float = geo.MIN_SCORE) -> list[dict]:
    """find_hands with the model leased through `call` for the whole picture."""
    return call(HANDS_MODEL, lambda model: find_hands(model, rgb, min_score))


def _r(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


def hand_json(hand: dict) -> dict:
    """One hand as JSON: the palm detector's score and box (pixels), hand presence, handedness
    and its score, the fingers' states, the gesture (or null), and the 21 landmarks by MediaPipe's
    names (HandLandmark, lower case): x, y in pixels, z on x's scale (smaller is nearer the
    camera, 0 at the wrist); "world": the same points in metres around the hand's centre."""
    det = hand["detection"]
    return {
        "score": _r(det.score, 3), "box": [_r(v, 1) for v in det.box], "presence": _r(hand["presence"], 3),
        "handedness": hand["handedness"], "handedness_score": _r(hand["handedness_score"], 3),
        "gesture": hand["gesture"], "fingers": hand["fingers"],
        "keypoints": [{"name": name, "x": _r(p[0], 1), "y": _r(p[1], 1), "z": _r(p[2], 1)}
                      for name, p in zip(NAMES, hand["points"])],
        "world": [{"name": name, "x": _r(w[0], 4), "y": _r(w[1], 4), "z": _r(w[2], 4)}
                  for name, w in zip(NAMES, hand["world"])],
    }
