"""Hands: the pre- and post-processing of MediaPipe's palm detector and hand landmarker, in numpy.

Every constant is MediaPipe's, taken from its graphs and calculators (google-ai-edge/mediapipe,
read at commit 85c0cdc7; the 0.10.21 wheel's networks):

- mediapipe/modules/palm_detection/palm_detection_cpu.pbtxt: the detector's input, anchors,
  decoding and NMS;
- mediapipe/modules/hand_landmark/palm_detection_detection_to_roi.pbtxt (DetectionsToRects,
  RectTransformationCalculator::TransformNormalizedRect): a palm to the landmark ROI;
- mediapipe/modules/hand_landmark/hand_landmark_cpu.pbtxt (TensorsToLandmarks,
  TensorsToClassification, LandmarkProjection, WorldLandmarkProjection): the landmark net;
- mediapipe/tasks/cc/vision/hand_landmarker/calculators/hand_landmarks_deduplication_calculator.cc:
  two palms of one hand give one hand.

The detector's anchors, decoding and NMS, the letterbox and the ROI warp are MediaPipe's shared
calculators, in analysers/mediapipe_ssd.py (as for body pose); this module holds the hands' own.
"""
from __future__ import annotations

import math

import numpy as np

from analysers.mediapipe_ssd import iou, normalize_radians
from analysers.mediapipe_ssd import Detection, Roi, SsdDetector, sigmoid, to_picture, warp  # noqa: F401

# -- palm_detection_cpu.pbtxt ---------------------------------------------------------------
DETECTOR_SIZE = 192            # ImageToTensorCalculator 192 x 192, keep_aspect_ratio, BORDER_ZERO, range [0, 1]
# SsdAnchorsCalculator: num_layers 4, strides 8 16 16 16, aspect_ratios 1.0, anchor offsets 0.5,
# fixed_anchor_size (every anchor 1 x 1), default interpolated_scale_aspect_ratio 1.0 (two anchors
# per layer and cell): 24x24 x 2 + 12x12 x 6 = 2016.
ANCHOR_STRIDES = (8, 16, 16, 16)
NUM_BOXES = 2016               # TensorsToDetectionsCalculator num_boxes 2016, num_coords 18
NUM_KEYPOINTS = 7              # keypoint_coord_offset 4, num_keypoints 7, 2 values each
SCORE_CLIP = 100.0             # score_clipping_thresh 100, sigmoid_score true
MIN_SCORE = 0.5                # min_score_thresh 0.5
NMS_IOU = 0.3                  # NonMaxSuppressionCalculator: 0.3, IoU, WEIGHTED
# reverse_output_order: boxes (x, y, w, h), keypoints (x, y), in pixels of the 192 input, from
# the anchor's centre.

# -- palm_detection_detection_to_roi.pbtxt ---------------------------------------------------
ROI_START, ROI_END = 0, 2      # keypoint 0: centre of the wrist; 2: the middle finger's MCP
ROI_TARGET_ANGLE = math.pi / 2  # rotation_vector_target_angle_degrees 90: wrist -> MCP points up
ROI_SCALE = 2.6                # scale_x = scale_y = 2.6, after square_long
ROI_SHIFT_Y = -0.5             # shift_y -0.5 of the box's height, along the hand's axis

# -- hand_landmark_cpu.pbtxt -----------------------------------------------------------------
LANDMARK_SIZE = 224            # ImageToTensorCalculator 224 x 224, range [0, 1], BORDER_REPLICATE (default)
NUM_LANDMARKS = 21
NORMALIZE_Z = 0.4              # TensorsToLandmarksCalculator normalize_z 0.4
PRESENCE_THRESHOLD = 0.5       # ThresholdingCalculator on the hand flag (already a probability)
# TensorsToClassificationCalculator binary_classification with handedness.txt (Left, Right): the
# net's one number is the score of "Left", 1 - it that of "Right". MediaPipe's label assumes a
# mirrored (selfie) picture (python/solutions/hands.py); for an ordinary photo it is swapped.

# -- hand_landmarks_deduplication_calculator.cc ----------------------------------------------
DEDUP_DISTANCE_RATIO = 0.2     # kAllowedBaselineDistanceRatio
DEDUP_MATCHED = 10             # kNumMatchedLandmarksToSuppressHand (of 21)
DEDUP_IOU = 0.2                # kMinIouThresholdToSuppressHand


# The detector as analysers/mediapipe_ssd.py runs it (letterbox, decode).
DETECTOR = SsdDetector(DETECTOR_SIZE, ANCHOR_STRIDES, NUM_BOXES, NUM_KEYPOINTS, (0.0, 1.0), SCORE_CLIP, NMS_IOU)


def roi_from_detection(detection: Detection) -> Roi:
    """The landmark net's ROI (palm_detection_detection_to_roi.pbtxt), in pixels: the palm box's
    centre, turned so that wrist -> middle MCP points up, shifted half the box toward the
    fingers, made square on its long side and scaled 2.6 times."""
    x1, y1, x2, y2 = detection.box
    w, h = x2 - x1, y2 - y1
    (ax, ay), (bx, by) = detection.keypoints[ROI_START], detection.keypoints[ROI_END]
    rotation = normalize_radians(ROI_TARGET_ANGLE - math.atan2(-(by - ay), bx - ax))
    # TransformNormalizedRect's shift, written in pixels (shift_x is 0).
    cx = (x1 + x2) / 2 - h * ROI_SHIFT_Y * math.sin(rotation)
    cy = (y1 + y2) / 2 + h * ROI_SHIFT_Y * math.cos(rotation)
    side = max(w, h) * ROI_SCALE
    return Roi(float(cx), float(cy), float(side), float(side), rotation)


# ---------------------------------------------------------------------------- landmarks

def landmark_input(rgb: np.ndarray, roi: Roi) -> np.ndarray:
    """(224, 224, 3) float32 in [0, 1]: the ROI cut out and turned upright, edges repeated."""
    return warp(rgb, roi, LANDMARK_SIZE, LANDMARK_SIZE, replicate=True) / 255.0


def decode_landmarks(outputs, roi: Roi) -> dict | None:
    """The landmark net's four outputs (landmarks (63,), hand flag (1,), handedness (1,), world
    landmarks (63,)) as one hand, or None when the flag is under 0.5.

    Returns {"presence", "left_score": MediaPipe's score for "Left" (mirrored-picture
    convention), "points": (21, 3) x, y in pixels, z on x's scale (smaller is nearer the
    camera, 0 at the wrist), "world": (21, 3) metres around the hand's centre, rotated like the
    picture}."""
    raw, flag, handedness, world = (np.asarray(o, np.float64).reshape(-1) for o in outputs)
    presence = float(flag[0])
    if presence < PRESENCE_THRESHOLD:
        return None
    raw = raw.reshape(NUM_LANDMARKS, 3) / LANDMARK_SIZE
    xs, ys = to_picture(roi, raw[:, 0], raw[:, 1])
    z = raw[:, 2] / NORMALIZE_Z * roi.width       # LandmarkProjectionCalculator scales z as x
    wl = world.reshape(NUM_LANDMARKS, 3)
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)   # WorldLandmarkProjectionCalculator
    world_xyz = np.stack([cos * wl[:, 0] - sin * wl[:, 1], sin * wl[:, 0] + cos * wl[:, 1], wl[:, 2]], axis=1)
    return {"presence": presence, "left_score": float(handedness[0]),
            "points": np.stack([xs, ys, z], axis=1), "world": world_xyz}


def _baseline(points: np.ndarray) -> float:
    wrist, index_mcp, pinky_mcp = points[0, :2], points[5, :2], points[17, :2]
    return max(np.linalg.norm(wrist - index_mcp), np.linalg.norm(index_mcp - pinky_mcp),
               np.linalg.norm(pinky_mcp - wrist))


def duplicates(hands: list[dict]) -> set[int]:
    """HandDuplicatesFinder, in pixels: a hand is dropped when >= 10 of its 21 points lie within
    0.2 of the larger palm baseline of a hand kept before it, and their point boxes overlap by
    IoU > 0.2."""
    kept, dropped = [], set()
    for i, hand in enumerate(hands):
        p = hand["points"][:, :2]
        box = np.r_[p.min(0), p.max(0)]
        for j in kept:
            q = hands[j]["points"][:, :2]
            threshold = max(_baseline(p), _baseline(q)) * DEDUP_DISTANCE_RATIO
            matched = int((np.linalg.norm(p - q, axis=1) < threshold).sum())
            if matched >= DEDUP_MATCHED and iou(box, np.r_[q.min(0), q.max(0)][None])[0] > DEDUP_IOU:
                dropped.add(i)
                break
        else:
            kept.append(i)
    return dropped
