"""Body pose: the pre- and post-processing of MediaPipe's two-stage pose pipeline, in numpy.

Every constant is MediaPipe's, taken from its graphs and calculators (google-ai-edge/mediapipe,
read at commit 85c0cdc7; the 0.10.21 wheel's networks):

- mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt: the detector's input, anchors,
  decoding and NMS;
- mediapipe/modules/pose_landmark/pose_detection_to_roi.pbtxt: a detection to the landmark ROI;
- mediapipe/modules/pose_landmark/pose_landmark_by_roi_cpu.pbtxt,
  tensors_to_pose_landmarks_and_segmentation.pbtxt and
  pose_landmarks_and_segmentation_inverse_projection.pbtxt: the landmark net's crop and outputs.

The detector's anchors, decoding and NMS, the letterbox and the ROI warp are MediaPipe's shared
calculators, in analysers/mediapipe_ssd.py; this module holds pose's constants and steps.
"""
from __future__ import annotations

import math

import numpy as np

from analysers.mediapipe_ssd import Detection, Roi, SsdDetector, normalize_radians, sigmoid, to_picture, warp  # noqa: F401

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


# The detector as analysers/mediapipe_ssd.py runs it (letterbox, decode).
DETECTOR = SsdDetector(DETECTOR_SIZE, ANCHOR_STRIDES, NUM_BOXES, NUM_KEYPOINTS, DETECTOR_RANGE, SCORE_CLIP, NMS_IOU)


def roi_from_detection(detection: Detection) -> Roi:
    """The landmark net's ROI: pose_detection_to_roi.pbtxt, in pixels."""
    (x0, y0), (x1, y1) = detection.keypoints[ROI_START], detection.keypoints[ROI_END]
    size = 2.0 * math.hypot(x1 - x0, y1 - y0) * ROI_SCALE   # square_long: the box is square in pixels
    rotation = normalize_radians(ROI_TARGET_ANGLE - math.atan2(-(y1 - y0), x1 - x0))
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
