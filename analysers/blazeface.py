"""BlazeFace (MediaPipe face detection), short- and full-range, with MediaPipe's own pre- and
post-processing, returning faces in the shape analysers.face_detector.detect_faces gives them.

Not registered with the engine: one network per function, and MTCNN stays the face detector
(bench/face_detectors.py: MTCNN finds faces from 20 px wide in 720p to frame-filling; neither
BlazeFace model covers that range alone, though both are 12-70x faster). Kept as the measured
candidate (`python -m bench face-detectors`) should speed on video come to weigh more.

The networks are the mediapipe 0.10.21 wheel's .tflite files (installed --no-deps, never
imported), rebuilt in torch by engine.runtimes.tflite and run on ONNX Runtime where the export
works. Every constant below comes from MediaPipe's graphs and calculators (google-ai-edge/mediapipe):

- mediapipe/modules/face_detection/face_detection.pbtxt: the shared graph (ImageToTensor ->
  Inference -> SsdAnchors + TensorsToDetections -> NonMaxSuppression -> DetectionProjection);
- face_detection_short_range.pbtxt / face_detection_full_range.pbtxt: the per-model options;
- calculators/tflite/ssd_anchors_calculator.cc, calculators/tensor/tensors_to_detections_calculator.cc,
  calculators/util/non_max_suppression_calculator.cc, calculators/tensor/image_to_tensor_utils.cc
  (PadRoi) and image_to_tensor_converter_opencv.cc (warpPerspective, INTER_LINEAR, BORDER_ZERO),
  calculators/util/detection_projection_calculator.cc.

Range (MediaPipe's model cards): short-range (128x128) is for faces within ~2 m of the camera,
i.e. faces that fill a good part of the frame (selfies, video calls); full-range (192x192, sparse
weights) for faces up to ~5 m. Both see the whole image letterboxed to their input, so the smallest
face found shrinks with the image's long side: bench/face_detectors.py measures it on 720p frames.

Each face is {"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] * 6]} in input pixels,
best score first. The six keypoints are MediaPipe's, in its order: the person's right eye, left
eye, nose tip, mouth centre, right ear tragion, left ear tragion (the person's right eye is on the
image's left in a frontal photo, where MTCNN's first landmark, "left eye", also lies).
"""
from __future__ import annotations

import functools
import os
import pathlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine import ModelSpec
from engine.package_files import package_folder

MiB = 1024**2
SHORT, FULL = "short", "full"
BLAZEFACE = {SHORT: "blazeface-short", FULL: "blazeface-full"}  # model names, were they registered
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")

_MISSING = ("mediapipe is not installed: run ./setup.sh (it installs mediapipe==0.10.21 with "
            "--no-deps, only for its .tflite files)")


@dataclass(frozen=True)
class Variant:
    file: str
    size: int  # tensor_width = tensor_height = x/y/w/h_scale
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    num_boxes: int
    min_score: float


VARIANTS = {
    # face_detection_short_range.pbtxt: FaceDetectionOptions
    SHORT: Variant("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 896, 0.5),
    # face_detection_full_range.pbtxt: FaceDetectionOptions
    FULL: Variant("face_detection_full_range_sparse.tflite", 192, (4,), 0.0, 2304, 0.6),
}
# face_detection.pbtxt, TensorsToDetectionsCalculator: sigmoid_score, score_clipping_thresh 100,
# num_coords 16 = box (4) + 6 keypoints x 2, reverse_output_order (x before y: box format XYWH).
SCORE_CLIP = 100.0
NUM_KEYPOINTS = 6
# face_detection.pbtxt, NonMaxSuppressionCalculator: WEIGHTED, INTERSECTION_OVER_UNION, 0.3.
NMS_IOU = 0.3


def model_path(variant: str = SHORT) -> pathlib.Path:
    """The variant's .tflite inside the installed mediapipe wheel (found, never imported)."""
    name = VARIANTS[variant].file
    return package_folder("mediapipe", "modules/face_detection", [name], _MISSING) / name


def unavailable_reason() -> str | None:
    try:
        for variant in VARIANTS:
            model_path(variant)
    except FileNotFoundError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------------------ anchors

def ssd_anchors(variant: str = SHORT) -> np.ndarray:
    """(num_boxes, 2) anchor centres (x, y) in [0, 1], as SsdAnchorsCalculator::GenerateAnchors
    makes them with face_detection.pbtxt's options (num_layers = len(strides), aspect_ratios [1.0],
    anchor_offset 0.5, fixed_anchor_size true: every anchor's w = h = 1, so only centres matter).
    Consecutive layers of one stride share a grid; each layer adds one anchor per cell for its
    aspect ratio and one more where interpolated_scale_aspect_ratio > 0."""
    v = VARIANTS[variant]
    per_layer = 1 + (v.interpolated_scale_aspect_ratio > 0)
    centres, layer = [], 0
    while layer < len(v.strides):
        last = layer
        while last < len(v.strides) and v.strides[last] == v.strides[layer]:
            last += 1
        side = int(np.ceil(v.size / v.strides[layer]))
        ys, xs = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cells, per_layer * (last - layer), axis=0))
        layer = last
    anchors = np.concatenate(centres).astype(np.float32)
    assert len(anchors) == v.num_boxes, (variant, len(anchors))
    return anchors


# ------------------------------------------------------------------------------ letterbox

def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The (size, size, 3) float32 tensor in [-1, 1] and (roi_side, pad_x, pad_y) in input pixels.

    ImageToTensorCalculator with keep_aspect_ratio: PadRoi grows the whole-image ROI to the
    tensor's (square) aspect around its centre; the OpenCV converter maps the ROI's corners onto
    the tensor's (an axis-aligned scale here) with INTER_LINEAR and BORDER_ZERO, then maps
    [0, 255] to output_tensor_float_range [-1, 1] (the border's 0 becomes -1). PIL's affine
    transform is set up to sample where warpPerspective does: tensor pixel i reads input
    position i / s - pad (OpenCV's pixel-index convention), bilinear, no antialiasing."""
    height, width = rgb.shape[:2]
    side = float(max(width, height))
    pad_x, pad_y = (side - width) / 2, (side - height) / 2
    s = size / side
    # PIL samples the source at a*(i + 0.5) + c - 0.5 for output index i; we want i / s - pad.
    a = 1.0 / s
    cx, cy = 0.5 - 0.5 * a - pad_x, 0.5 - 0.5 * a - pad_y
    warped = Image.fromarray(rgb).transform((size, size), Image.Transform.AFFINE, (a, 0, cx, 0, a, cy),
                                            resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    tensor = np.asarray(warped, dtype=np.float32) * (2.0 / 255.0) - 1.0
    return tensor, (side, pad_x, pad_y)


# ------------------------------------------------------------------------------ decoding

def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, variant: str = SHORT,
           min_score: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TensorsToDetectionsCalculator::ProcessCPU for one image: boxes (n, 4) xmin, ymin, xmax, ymax
    and keypoints (n, 6, 2), both in [0, 1] tensor coordinates, and scores (n,), for the anchors
    scoring at least `min_score` (the graph's min_score_thresh by default)."""
    v = VARIANTS[variant]
    scale = float(v.size)  # x_scale = y_scale = w_scale = h_scale = tensor size
    raw = raw_boxes.reshape(-1, 4 + 2 * NUM_KEYPOINTS).astype(np.float32)
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)  # float64: exp(100) overflows float32
    keep = scores >= (v.min_score if min_score is None else min_score)
    raw, scores, anchors = raw[keep], scores[keep], anchors[keep]
    # XYWH (reverse_output_order); anchors' w = h = 1, so the offsets are plain fractions.
    centre = raw[:, 0:2] / scale + anchors
    wh = raw[:, 2:4] / scale
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
    keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) / scale + anchors[:, None, :]
    # ConvertToDetections drops negative or NaN sizes (b/171391719).
    ok = (wh >= 0).all(axis=1) & ~np.isnan(wh).any(axis=1)
    return boxes[ok], keypoints[ok], scores[ok]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """OverlapSimilarity with INTERSECTION_OVER_UNION: 0 where the rectangles do not intersect
    (touching counts as intersecting, with area 0) or the union is empty."""
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.where((iw >= 0) & (ih >= 0), np.maximum(iw, 0) * np.maximum(ih, 0), 0.0)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 threshold: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NonMaxSuppressionCalculator::WeightedNonMaxSuppression: take the best remaining detection,
    gather every remaining one overlapping it by more than `threshold` (itself included), replace
    its box corners and keypoints by their score-weighted mean, keep the best score; repeat."""
    order = np.argsort(-scores, kind="stable")
    out_b, out_k, out_s = [], [], []
    while order.size:
        top = order[0]
        close = _iou(boxes[top], boxes[order]) > threshold
        members = order[close]
        if members.size:
            w = scores[members][:, None]
            out_b.append((boxes[members] * w).sum(0) / w.sum())
            out_k.append((keypoints[members] * w[:, :, None]).sum(0) / w.sum())
        else:  # a degenerate best box overlaps nothing, not even itself: kept as it is
            out_b.append(boxes[top])
            out_k.append(keypoints[top])
        out_s.append(scores[top])
        if not close.any():  # the calculator stops when a round removed nothing
            break
        order = order[~close]
    if not out_s:
        return boxes[:0], keypoints[:0], scores[:0]
    return np.stack(out_b), np.stack(out_k), np.asarray(out_s, np.float32)


# ------------------------------------------------------------------------------ the detector

class BlazeFace:
    """One variant's net and its processing; calling it with a uint8 image gives the faces.
    `net` is the engine.runtimes.tflite.TFLiteNet (torch, or its ONNX Runtime export)."""

    def __init__(self, variant: str = SHORT, device: str = "cpu", accelerate: str | None = None,
                 cache_dir: str | os.PathLike | None = None, threads: int | None = None):
        import torch

        from engine.runtimes.tflite import TFLiteNet, export_key

        self.variant, self.config = variant, VARIANTS[variant]
        # threads: ONNX Runtime's intra-op threads, torch's count unless told (as the bench sets it).
        self.net = TFLiteNet(model_path(variant), device, accelerate, cache_dir,
                             export_key(self.config.file.removesuffix(".tflite")),
                             threads=threads or torch.get_num_threads())
        self.anchors = ssd_anchors(variant)

    @property
    def runtime(self) -> str:
        """What runs the net now: "onnxruntime", or "torch" (eager, also after a fall-back)."""
        return self.net.runtime

    def raw(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The net's (regressors (n, 16), classificators (n, 1)) for one (size, size, 3) tensor."""
        boxes, scores = self.net(tensor)
        return boxes, scores

    def __call__(self, image: np.ndarray, min_score: float | None = None) -> list[dict]:
        from .face_detector import as_rgb

        rgb = as_rgb(image)
        height, width = rgb.shape[:2]
        if min(height, width) < 1:
            return []
        tensor, (side, pad_x, pad_y) = letterbox(rgb, self.config.size)
        boxes, keypoints, scores = weighted_nms(*decode(*self.raw(tensor), self.anchors, self.variant, min_score))
        # DetectionProjectionCalculator: tensor [0, 1] -> the padded square ROI -> input pixels.
        boxes = boxes * side - np.array([pad_x, pad_y, pad_x, pad_y], np.float32)
        keypoints = keypoints * side - np.array([pad_x, pad_y], np.float32)
        # Like detect_faces: boxes cut to the image (keypoints are left where the net put them).
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        faces = [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 5),
                  "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in marks]}
                 for box, marks, score in zip(boxes, keypoints, scores) if box[2] > box[0] and box[3] > box[1]]
        return sorted(faces, key=lambda f: f["score"], reverse=True)


def load_blazeface(variant: str = SHORT, device: str = "cpu", accelerate: str | None = "onnx",
                   cache_dir: str | os.PathLike | None = None, threads: int | None = None) -> BlazeFace:
    """The variant ("short" or "full") on `device`, on ONNX Runtime (accelerate "onnx", exported
    once and cached in `cache_dir`) or eager torch (None / "eager"); `.runtime` says which."""
    return BlazeFace(variant, device, accelerate, cache_dir, threads)


def prepare(cache_dir: str | os.PathLike | None = None) -> dict:
    """Pay both ONNX exports at set-up rather than in a first request (for analysers.warmup)."""
    return {v: load_blazeface(v, "cpu", "onnx", cache_dir).net.net.info.as_dict() for v in VARIANTS}


def specs() -> list[ModelSpec]:
    """Specs for the two variants, should the engine serve them (not registered today)."""
    from engine.runtimes import onnx_runtime

    return [
        ModelSpec(name=BLAZEFACE[v], role="interactive", runtime="onnxruntime",
                  loader=functools.partial(load_blazeface, v), device=onnx_runtime.spec_device(),
                  source=f"mediapipe 0.10.21 wheel: modules/face_detection/{VARIANTS[v].file}",
                  # Measured on CPU, the ONNX file cached: a load adds 39 MiB RSS (short, the first
                  # ONNX Runtime session included) / 17 MiB (full); a run ~1 MiB at any image size.
                  estimate_bytes=40 * MiB, run_estimate_bytes=2 * MiB,
                  description=f"BlazeFace {v}-range: face boxes and 6 keypoints")
        for v in VARIANTS
    ]
