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

The warp follows ImageToTensorCalculator (cv::warpAffine, bilinear) as tabs/pose/geometry.py
does: tensor pixel (u, v) reads the picture at
    centre + R(rotation) @ ((u / out_w - 0.5) * roi_w, (v / out_h - 0.5) * roi_h),
R = [[cos, -sin], [sin, cos]] in image axes (y down); landmarks go back by the same map.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

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


@dataclasses.dataclass
class Detection:
    """One palm in picture pixels: score, box (x1, y1, x2, y2) and 7 keypoints (wrist centre,
    index MCP, middle MCP, ring MCP, pinky MCP, two thumb points)."""
    score: float
    box: np.ndarray        # (4,)
    keypoints: np.ndarray  # (7, 2)


@dataclasses.dataclass
class Roi:
    """A rotated rectangle in pixels: what the landmark net sees."""
    cx: float
    cy: float
    width: float
    height: float
    rotation: float  # radians, clockwise on screen (image y points down)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -500, 500)))


def normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


# ---------------------------------------------------------------------------- warping

def warp(image: np.ndarray, roi: Roi, out_w: int, out_h: int, replicate: bool) -> np.ndarray:
    """(out_h, out_w, C) float32 of the uint8 (H, W, C) `image` inside `roi`, bilinear; outside the
    image the edge is repeated (`replicate`) or zero."""
    height, width = image.shape[:2]
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)
    u = (np.arange(out_w, dtype=np.float32) / out_w - 0.5) * roi.width
    v = (np.arange(out_h, dtype=np.float32) / out_h - 0.5) * roi.height
    xs = roi.cx + cos * u[None, :] - sin * v[:, None]
    ys = roi.cy + sin * u[None, :] + cos * v[:, None]
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    out = np.zeros((out_h, out_w, image.shape[2]), np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            pixels = image[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)].astype(np.float32)
            if not replicate:
                pixels *= ((xi >= 0) & (xi < width) & (yi >= 0) & (yi < height))[..., None]
            out += wx * wy * pixels
    return out


def to_picture(roi: Roi, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points given as fractions of the ROI's tensor (0..1 across) in picture pixels."""
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)
    u, v = (x - 0.5) * roi.width, (y - 0.5) * roi.height
    return roi.cx + cos * u - sin * v, roi.cy + sin * u + cos * v


# ---------------------------------------------------------------------------- the palm detector

@functools.lru_cache(maxsize=1)
def anchors() -> np.ndarray:
    """(2016, 2) anchor centres (x, y) as fractions of the 192 input: SsdAnchorsCalculator's loop
    (layers with one stride share a feature map; two 1 x 1 anchors per layer and cell)."""
    centres = []
    layer = 0
    while layer < len(ANCHOR_STRIDES):
        same = layer
        while same < len(ANCHOR_STRIDES) and ANCHOR_STRIDES[same] == ANCHOR_STRIDES[layer]:
            same += 1
        side = math.ceil(DETECTOR_SIZE / ANCHOR_STRIDES[layer])
        for y in range(side):
            for x in range(side):
                centres.extend([((x + 0.5) / side, (y + 0.5) / side)] * (2 * (same - layer)))
        layer = same
    out = np.asarray(centres, dtype=np.float64)
    assert len(out) == NUM_BOXES, len(out)
    return out


def detector_input(rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """(192, 192, 3) float32 in [0, 1]: the whole picture letterboxed (centred, zero border), and
    the padding (horizontal, vertical) on each side as a fraction of the tensor."""
    height, width = rgb.shape[:2]
    side = float(max(width, height))
    roi = Roi(width / 2, height / 2, side, side, 0.0)
    x = warp(rgb, roi, DETECTOR_SIZE, DETECTOR_SIZE, replicate=False) / 255.0
    return x, ((1 - width / side) / 2, (1 - height / side) / 2)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU):
    """NonMaxSuppressionCalculator's WEIGHTED algorithm: the best box averaged with every box
    overlapping it by IoU > `iou` (score-weighted, keypoints too), the best's score kept, repeated
    on the rest. [(score, box (4,), keypoints (K, 2))]."""
    order = np.argsort(-scores, kind="stable")
    out = []
    while len(order):
        best = order[0]
        overlap = _iou(boxes[best], boxes[order]) > iou
        group, order = order[overlap], order[~overlap]
        weights = scores[group][:, None]
        out.append((scores[best], (boxes[group] * weights).sum(0) / weights.sum(),
                    (points[group] * weights[:, :, None]).sum(0) / weights.sum()))
    return out


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, padding: tuple[float, float],
                      width: int, height: int, min_score: float = MIN_SCORE) -> list[Detection]:
    """The detector's outputs ((2016, 18), (2016, 1)) as palms in picture pixels, best first."""
    raw_boxes = np.asarray(raw_boxes, np.float64).reshape(NUM_BOXES, -1)
    scores = sigmoid(np.clip(np.asarray(raw_scores, np.float64).reshape(NUM_BOXES), -SCORE_CLIP, SCORE_CLIP))
    keep = np.flatnonzero(scores >= min_score)
    if not len(keep):
        return []
    centre = anchors()[keep]
    raw = raw_boxes[keep] / DETECTOR_SIZE
    cx, cy, w, h = raw[:, 0] + centre[:, 0], raw[:, 1] + centre[:, 1], raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    points = raw[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + centre[:, None, :]
    valid = (w >= 0) & (h >= 0)   # ConvertToDetections drops boxes with a negative size
    pad_x, pad_y = padding         # DetectionLetterboxRemovalCalculator, then to pixels
    scale = np.array([width / (1 - 2 * pad_x), height / (1 - 2 * pad_y)])
    shift = np.array([pad_x, pad_y])
    return [Detection(float(score), ((box.reshape(2, 2) - shift) * scale).reshape(4), (kps - shift) * scale)
            for score, box, kps in weighted_nms(boxes[valid], points[valid], scores[keep][valid])]


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
            if matched >= DEDUP_MATCHED and _iou(box, np.r_[q.min(0), q.max(0)][None])[0] > DEDUP_IOU:
                dropped.add(i)
                break
        else:
            kept.append(i)
    return dropped
