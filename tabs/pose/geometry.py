"""Body pose: the pre- and post-processing of MediaPipe's two-stage pose pipeline, in numpy.

Every constant is MediaPipe's, taken from its graphs and calculators (google-ai-edge/mediapipe,
read at commit 85c0cdc7; the 0.10.21 wheel's networks):

- mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt: the detector's input, anchors,
  decoding and NMS;
- mediapipe/modules/pose_landmark/pose_detection_to_roi.pbtxt: a detection to the landmark ROI;
- mediapipe/modules/pose_landmark/pose_landmark_by_roi_cpu.pbtxt,
  tensors_to_pose_landmarks_and_segmentation.pbtxt and
  pose_landmarks_and_segmentation_inverse_projection.pbtxt: the landmark net's crop and outputs.

Pictures are warped as ImageToTensorCalculator's OpenCV converter does (cv::warpAffine,
INTER_LINEAR, from cv::boxPoints of the rotated ROI to the tensor's corners), here by our own
bilinear sampling: tensor pixel (u, v) reads the image at
    centre + R(rotation) @ ((u / out_w - 0.5) * roi_w, (v / out_h - 0.5) * roi_h),
with R = [[cos, -sin], [sin, cos]] in image axes (y down); landmarks go back by the same map
(LandmarkProjectionCalculator with image dimensions, i.e. in pixels).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

# -- pose_detection_cpu.pbtxt ---------------------------------------------------------------
DETECTOR_SIZE = 224            # ImageToTensorCalculator output_tensor_width/height: 224
DETECTOR_RANGE = (-1.0, 1.0)   # output_tensor_float_range {min: -1 max: 1}; keep_aspect_ratio true, BORDER_ZERO
# SsdAnchorsCalculator: num_layers 5, min_scale 0.1484375, max_scale 0.75, strides 8 16 32 32 32,
# aspect_ratios 1.0, anchor offsets 0.5, fixed_anchor_size true (every anchor is 1 x 1), and the
# proto's default interpolated_scale_aspect_ratio 1.0 (a second anchor per cell and layer).
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
NUM_BOXES = 2254               # TensorsToDetectionsCalculator num_boxes 2254, num_coords 12
NUM_KEYPOINTS = 4              # keypoint_coord_offset 4, num_keypoints 4, num_values_per_keypoint 2
SCORE_CLIP = 100.0             # score_clipping_thresh 100, sigmoid_score true
MIN_SCORE = 0.5                # min_score_thresh 0.5
NMS_IOU = 0.3                  # NonMaxSuppressionCalculator: min_suppression_threshold 0.3, IoU, WEIGHTED
# reverse_output_order true: boxes are (x, y, w, h), keypoints (x, y), all in pixels of the 224
# input (x_scale = y_scale = w_scale = h_scale = 224), relative to the anchor's centre.

# -- pose_detection_to_roi.pbtxt ------------------------------------------------------------
# AlignmentPointsRectsCalculator: centre = keypoint 0 (mid-hip), size = 2 x its distance to
# keypoint 1 (the point on the circle around the whole body); rotation so that 0 -> 1 points
# up (rotation_vector_target_angle_degrees 90). RectTransformationCalculator: square_long,
# scale_x = scale_y = 1.25.
ROI_START, ROI_END = 0, 1
ROI_TARGET_ANGLE = math.pi / 2
ROI_SCALE = 1.25

# -- pose_landmark_by_roi_cpu.pbtxt, tensors_to_pose_landmarks_and_segmentation.pbtxt -------
LANDMARK_SIZE = 256            # ImageToTensorCalculator 256 x 256, range [0, 1], default BORDER_REPLICATE
NUM_RAW_LANDMARKS = 39         # TensorsToLandmarksCalculator num_landmarks 39 (33 + 2 auxiliary + 4 unused)
NUM_LANDMARKS = 33             # SplitNormalizedLandmarkListCalculator: 0..33 are the pose's landmarks
PRESENCE_THRESHOLD = 0.5       # ThresholdingCalculator on the pose flag: threshold 0.5
HEATMAP_KERNEL = 7             # RefineLandmarksFromHeatmapCalculator kernel_size 7
HEATMAP_MIN_CONFIDENCE = 0.5   # its proto default min_confidence_to_refine 0.5


@dataclasses.dataclass
class Detection:
    """One person found by the detector, in the picture's pixels: score, box (x1, y1, x2, y2;
    the detector's box is around the face) and its 4 keypoints (mid-hip, full-body circle point,
    mid-shoulder, upper-body circle point)."""
    score: float
    box: np.ndarray        # (4,)
    keypoints: np.ndarray  # (4, 2)


@dataclasses.dataclass
class Roi:
    """A rotated rectangle in pixels: what the landmark net sees."""
    cx: float
    cy: float
    width: float
    height: float
    rotation: float  # radians, clockwise on screen (image y points down)


def sigmoid(x):
    # Clipped: the segmentation logits reach +-1.6e3, and exp overflows float64 past 709.
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -500, 500)))


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

@functools.lru_cache(maxsize=1)
def anchors() -> np.ndarray:
    """(2254, 2) anchor centres (x, y) as fractions of the 224 input: SsdAnchorsCalculator's loop
    (layers with the same stride share one feature map; two anchors per layer and cell, one for
    the aspect ratio 1.0 and one interpolated, both 1 x 1 with fixed_anchor_size)."""
    centres = []
    layer = 0
    while layer < len(ANCHOR_STRIDES):
        same = layer
        while same < len(ANCHOR_STRIDES) and ANCHOR_STRIDES[same] == ANCHOR_STRIDES[layer]:
            same += 1
        per_cell = 2 * (same - layer)
        side = math.ceil(DETECTOR_SIZE / ANCHOR_STRIDES[layer])
        for y in range(side):
            for x in range(side):
                centres.extend([((x + 0.5) / side, (y + 0.5) / side)] * per_cell)
        layer = same
    out = np.asarray(centres, dtype=np.float64)
    assert len(out) == NUM_BOXES, len(out)
    return out


def detector_input(rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """(224, 224, 3) float32 in [-1, 1]: the whole picture letterboxed (centred, zero border), and
    the padding (horizontal, vertical) on each side as a fraction of the tensor (PadRoi)."""
    height, width = rgb.shape[:2]
    side = float(max(width, height))
    pad_x, pad_y = (1 - width / side) / 2, (1 - height / side) / 2
    roi = Roi(width / 2, height / 2, side, side, 0.0)
    x = warp(rgb, roi, DETECTOR_SIZE, DETECTOR_SIZE, replicate=False)
    low, high = DETECTOR_RANGE
    return x * ((high - low) / 255.0) + low, (pad_x, pad_y)


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, padding: tuple[float, float],
                      width: int, height: int, min_score: float = MIN_SCORE) -> list[Detection]:
    """The detector's outputs ((2254, 12), (2254, 1)) as detections in picture pixels, best first:
    anchors decoded, scores over `min_score`, weighted NMS, letterbox removed."""
    raw_boxes = np.asarray(raw_boxes, np.float64).reshape(NUM_BOXES, -1)
    scores = sigmoid(np.clip(np.asarray(raw_scores, np.float64).reshape(NUM_BOXES), -SCORE_CLIP, SCORE_CLIP))
    keep = np.flatnonzero(scores >= min_score)
    if not len(keep):
        return []
    centre = anchors()[keep]
    raw = raw_boxes[keep] / DETECTOR_SIZE
    cx, cy = raw[:, 0] + centre[:, 0], raw[:, 1] + centre[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    points = raw[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + centre[:, None, :]
    valid = (w >= 0) & (h >= 0)   # ConvertToDetections drops boxes with a negative size
    merged = weighted_nms(boxes[valid], points[valid], scores[keep][valid])
    pad_x, pad_y = padding
    scale = np.array([width / (1 - 2 * pad_x), height / (1 - 2 * pad_y)])
    shift = np.array([pad_x, pad_y])
    out = []
    for score, box, kps in merged:
        corners = (box.reshape(2, 2) - shift) * scale      # DetectionLetterboxRemovalCalculator
        out.append(Detection(float(score), corners.reshape(4), (kps - shift) * scale))
    return out


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU):
    """NonMaxSuppressionCalculator's WEIGHTED algorithm: take the best box, average it with every
    box overlapping it by IoU > `iou` (weights: their scores; keypoints too), keep the best's
    score, repeat with the rest. [(score, box (4,), keypoints (K, 2))]."""
    order = np.argsort(-scores, kind="stable")
    out = []
    while len(order):
        best = order[0]
        overlap = _iou(boxes[best], boxes[order]) > iou
        group, order = order[overlap], order[~overlap]
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(0) / weights.sum()
        kps = (points[group] * weights[:, :, None]).sum(0) / weights.sum()
        out.append((scores[best], box, kps))
    return out


def roi_from_detection(detection: Detection) -> Roi:
    """The landmark net's ROI: pose_detection_to_roi.pbtxt, in pixels."""
    (x0, y0), (x1, y1) = detection.keypoints[ROI_START], detection.keypoints[ROI_END]
    size = 2.0 * math.hypot(x1 - x0, y1 - y0) * ROI_SCALE   # square_long: the box is square in pixels
    angle = ROI_TARGET_ANGLE - math.atan2(-(y1 - y0), x1 - x0)
    rotation = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))  # NormalizeRadians
    return Roi(float(x0), float(y0), size, size, rotation)


# ---------------------------------------------------------------------------- landmarks

def landmark_input(rgb: np.ndarray, roi: Roi) -> np.ndarray:
    """(256, 256, 3) float32 in [0, 1]: the ROI cut out and turned upright, edges repeated."""
    return warp(rgb, roi, LANDMARK_SIZE, LANDMARK_SIZE, replicate=True) / 255.0


def refine_from_heatmap(xy: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """RefineLandmarksFromHeatmapCalculator: each landmark moved to the sigmoid-weighted mean of
    its heatmap channel in a 7 x 7 window around it, where that window's peak is >= 0.5."""
    hm_h, hm_w, _ = heatmap.shape
    out = xy.copy()
    half = (HEATMAP_KERNEL - 1) // 2
    for i, (x, y) in enumerate(xy):
        col, row = int(x * hm_w), int(y * hm_h)   # as C++'s float -> int: toward zero
        if not (0 <= col < hm_w and 0 <= row < hm_h):
            continue
        rows = slice(max(0, row - half), min(hm_h, row + half + 1))
        cols = slice(max(0, col - half), min(hm_w, col + half + 1))
        conf = sigmoid(heatmap[rows, cols, i])
        total = conf.sum()
        if conf.max() >= HEATMAP_MIN_CONFIDENCE and total > 0:
            r, c = np.mgrid[rows, cols]
            out[i] = ((c * conf).sum() / hm_w / total, (r * conf).sum() / hm_h / total)
    return out


def decode_landmarks(outputs, roi: Roi) -> dict | None:
    """The landmark net's five outputs (landmarks (195,), pose flag (1,), segmentation, heatmap
    (64, 64, 39), world landmarks (117,)) as one pose, or None when the flag is under 0.5.

    Returns {"presence": flag, "points": (33, 5) x, y, z (pixels; z on x's scale, smaller is
    nearer the camera, 0 at the hips), visibility, presence, "world": (33, 3) metres, origin
    between the hips, rotated like the picture}."""
    raw, flag, _, heatmap, world = (np.asarray(o, np.float64) for o in outputs)
    presence = float(flag.reshape(-1)[0])
    if presence < PRESENCE_THRESHOLD:
        return None
    raw = raw.reshape(NUM_RAW_LANDMARKS, 5)
    xy = refine_from_heatmap(raw[:, :2] / LANDMARK_SIZE, heatmap.reshape(heatmap.shape[-3:]))
    xs, ys = to_picture(roi, xy[:NUM_LANDMARKS, 0], xy[:NUM_LANDMARKS, 1])
    z = raw[:NUM_LANDMARKS, 2] / LANDMARK_SIZE * roi.width   # normalize_z 1; LandmarkProjection scales z as x
    points = np.stack([xs, ys, z, sigmoid(raw[:NUM_LANDMARKS, 3]), sigmoid(raw[:NUM_LANDMARKS, 4])], axis=1)
    wl = world.reshape(NUM_RAW_LANDMARKS, 3)[:NUM_LANDMARKS]
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)   # WorldLandmarkProjectionCalculator
    world_xyz = np.stack([cos * wl[:, 0] - sin * wl[:, 1], sin * wl[:, 0] + cos * wl[:, 1], wl[:, 2]], axis=1)
    return {"presence": presence, "points": points, "world": world_xyz}


def segmentation_to_picture(logits: np.ndarray, roi: Roi, width: int, height: int) -> np.ndarray:
    """The net's 256 x 256 segmentation logits as P(person) over the picture (H, W) float32:
    sigmoid (TensorsToSegmentationCalculator), warped back by the inverse of the crop, zero
    outside the ROI (WarpAffineCalculator, BORDER_ZERO)."""
    prob = sigmoid(np.asarray(logits, np.float64).reshape(LANDMARK_SIZE, LANDMARK_SIZE)).astype(np.float32)
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)
    px, py = np.meshgrid(np.arange(width, dtype=np.float32) - roi.cx, np.arange(height, dtype=np.float32) - roi.cy)
    u = ((cos * px + sin * py) / roi.width + 0.5) * LANDMARK_SIZE
    v = ((-sin * px + cos * py) / roi.height + 0.5) * LANDMARK_SIZE
    x0, y0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fx, fy = u - x0, v - y0
    out = np.zeros((height, width), np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < LANDMARK_SIZE) & (yi >= 0) & (yi < LANDMARK_SIZE)
            out += wx * wy * inside * prob[np.clip(yi, 0, LANDMARK_SIZE - 1), np.clip(xi, 0, LANDMARK_SIZE - 1)]
    return out
