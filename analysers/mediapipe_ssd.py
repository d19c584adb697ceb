"""What MediaPipe's two-stage pipelines (a detector, then a landmark net on a turned crop) share,
in numpy: the SSD detector's anchors, decoding and weighted NMS, the letterboxed input, and the
rotated region of interest warped for the landmark net and mapped back. Body pose (tabs/pose)
and hands (tabs/hands) use it with their own constants.

Taken from MediaPipe's calculators (google-ai-edge/mediapipe at commit 85c0cdc7):
calculators/tflite/ssd_anchors_calculator.cc, calculators/tensor/tensors_to_detections_calculator.cc,
calculators/util/non_max_suppression_calculator.cc (WEIGHTED), calculators/util/
detection_letterbox_removal_calculator.cc, calculators/tensor/image_to_tensor_calculator.cc (its
OpenCV converter: cv::warpAffine, INTER_LINEAR) and landmark_projection_calculator.cc.

The warp: tensor pixel (u, v) reads the picture at
    centre + R(rotation) @ ((u / out_w - 0.5) * roi_w, (v / out_h - 0.5) * roi_h),
R = [[cos, -sin], [sin, cos]] in image axes (y down); landmarks go back by the same map.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np


@dataclasses.dataclass
class Detection:
    """One detection in picture pixels: score, box (x1, y1, x2, y2) and its keypoints (K, 2)."""
    score: float
    box: np.ndarray        # (4,)
    keypoints: np.ndarray  # (K, 2)


@dataclasses.dataclass
class Roi:
    """A rotated rectangle in pixels: what the landmark net sees."""
    cx: float
    cy: float
    width: float
    height: float
    rotation: float  # radians, clockwise on screen (image y points down)


@dataclasses.dataclass(frozen=True)
class SsdDetector:
    """One detector's constants, from its graph (TensorsToDetectionsCalculator, ImageToTensor)."""
    size: int                          # square input, pixels
    strides: tuple[int, ...]           # SsdAnchorsCalculator's strides
    num_boxes: int
    num_keypoints: int
    value_range: tuple[float, float]   # output_tensor_float_range
    score_clip: float = 100.0          # score_clipping_thresh, sigmoid_score true
    nms_iou: float = 0.3               # min_suppression_threshold, IoU, WEIGHTED


def sigmoid(x):
    # Clipped: pose's segmentation logits reach +-1.6e3, and exp overflows float64 past 709.
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -500, 500)))


def normalize_radians(angle: float) -> float:
    """The angle in [-pi, pi), as MediaPipe's NormalizeRadians."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


# ---------------------------------------------------------------------------- warping

def warp(image: np.ndarray, roi: Roi, out_w: int, out_h: int, replicate: bool) -> np.ndarray:
    """(out_h, out_w, C) float32 of the uint8 (H, W, C) `image` inside `roi`, bilinear; outside the
    image the edge is repeated (`replicate`, BORDER_REPLICATE) or zero (BORDER_ZERO)."""
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
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            pixels = image[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)].astype(np.float32)
            if not replicate:
                pixels *= inside[..., None]
            out += wx * wy * pixels
    return out


def to_picture(roi: Roi, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points given as fractions of the ROI's tensor (0..1 across) in picture pixels."""
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)
    u, v = (x - 0.5) * roi.width, (y - 0.5) * roi.height
    return roi.cx + cos * u - sin * v, roi.cy + sin * u + cos * v


# ---------------------------------------------------------------------------- the detector

@functools.lru_cache(maxsize=None)
def anchors(size: int, strides: tuple[int, ...]) -> np.ndarray:
    """(N, 2) anchor centres (x, y) as fractions of the input: SsdAnchorsCalculator's loop (layers
    with the same stride share one feature map; two anchors per layer and cell, one for the aspect
    ratio 1.0 and one interpolated, both 1 x 1 with fixed_anchor_size)."""
    centres = []
    layer = 0
    while layer < len(strides):
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        side = math.ceil(size / strides[layer])
        for y in range(side):
            for x in range(side):
                centres.extend([((x + 0.5) / side, (y + 0.5) / side)] * (2 * (same - layer)))
        layer = same
    return np.asarray(centres, dtype=np.float64)


def letterbox(rgb: np.ndarray, detector: SsdDetector) -> tuple[np.ndarray, tuple[float, float]]:
    """(size, size, 3) float32 in the detector's value range: the whole picture letterboxed
    (centred, zero border), and the padding (horizontal, vertical) on each side as a fraction of
    the tensor (PadRoi)."""
    height, width = rgb.shape[:2]
    side = float(max(width, height))
    roi = Roi(width / 2, height / 2, side, side, 0.0)
    x = warp(rgb, roi, detector.size, detector.size, replicate=False)
    low, high = detector.value_range
    return x * ((high - low) / 255.0) + low, ((1 - width / side) / 2, (1 - height / side) / 2)


def decode(detector: SsdDetector, raw_boxes: np.ndarray, raw_scores: np.ndarray,
           padding: tuple[float, float], width: int, height: int, min_score: float) -> list[Detection]:
    """The detector's outputs ((N, 4 + 2K), (N, 1)) as detections in picture pixels, best first:
    anchors decoded, scores over `min_score`, weighted NMS, letterbox removed."""
    raw_boxes = np.asarray(raw_boxes, np.float64).reshape(detector.num_boxes, -1)
    scores = sigmoid(np.clip(np.asarray(raw_scores, np.float64).reshape(detector.num_boxes),
                             -detector.score_clip, detector.score_clip))
    keep = np.flatnonzero(scores >= min_score)
    if not len(keep):
        return []
    centre = anchors(detector.size, detector.strides)[keep]
    raw = raw_boxes[keep] / detector.size
    cx, cy, w, h = raw[:, 0] + centre[:, 0], raw[:, 1] + centre[:, 1], raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    points = raw[:, 4:4 + 2 * detector.num_keypoints].reshape(-1, detector.num_keypoints, 2) + centre[:, None, :]
    valid = (w >= 0) & (h >= 0)   # ConvertToDetections drops boxes with a negative size
    pad_x, pad_y = padding        # DetectionLetterboxRemovalCalculator, then to pixels
    scale = np.array([width / (1 - 2 * pad_x), height / (1 - 2 * pad_y)])
    shift = np.array([pad_x, pad_y])
    return [Detection(float(score), ((box.reshape(2, 2) - shift) * scale).reshape(4), (kps - shift) * scale)
            for score, box, kps in weighted_nms(boxes[valid], points[valid], scores[keep][valid], detector.nms_iou)]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (x1, y1, x2, y2) with each of `boxes`; 0 where the union is empty."""
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, overlap: float):
    """NonMaxSuppressionCalculator's WEIGHTED algorithm: take the best box, average it with every
    box overlapping it by IoU > `overlap` (weights: their scores; keypoints too), keep the best's
    score, repeat with the rest. [(score, box (4,), keypoints (K, 2))]."""
    order = np.argsort(-scores, kind="stable")
    out = []
    while len(order):
        best = order[0]
        near = iou(boxes[best], boxes[order]) > overlap
        near[0] = True   # a zero-size best box overlaps nothing, not even itself: it still goes
        group, order = order[near], order[~near]
        weights = scores[group][:, None]
        out.append((scores[best], (boxes[group] * weights).sum(0) / weights.sum(),
                    (points[group] * weights[:, :, None]).sum(0) / weights.sum()))
    return out
