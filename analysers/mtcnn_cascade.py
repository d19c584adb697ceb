"""The MTCNN cascade (analysers.face_detector's nets) run on one image: PNet over an image
pyramid proposes boxes, RNet and ONet refine them; or, to follow faces from frame to frame, RNet
and ONet alone on boxes already known (refine_faces). Follows facenet-pytorch 2.6.0's
detect_face.py step by step. Boxes are numpy rows [x1, y1, x2, y2, score, ...] in input pixels."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from .face_boxes import nms, regress, square

# The original feeds RNet/ONet at most this many crops at once so memory stays bounded.
_CHUNK = 512



def as_rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]  # drop alpha, as PIL's convert("RGB") does
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {arr.shape}")
    return arr


def _normalize(x: np.ndarray) -> np.ndarray:
    # The nets were trained on pixels mapped to about [-1, 1].
    return (x - np.float32(127.5)) * np.float32(0.0078125)


def _area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    # OpenCV's INTER_AREA averages each output pixel's footprint like torch's "area" mode (which
    # facenet-pytorch uses), at a small fraction of the time on a CPU: adaptive_avg_pool2d with
    # non-integer ratios took 2/3 of MTCNN's time per 720p frame.
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _to_batch(images: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    """HxWx3 float32 host images -> a normalised Nx3xHxW batch on the nets' device and dtype."""
    batch = _normalize(np.stack(images)).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(batch)).to(like.device, like.dtype)


def _crops(img: np.ndarray, boxes: np.ndarray, size: int, like: torch.Tensor) -> tuple[torch.Tensor | None, np.ndarray]:
    """Cut each box out of img (HxWx3 float32) and resize it to size x size.

    Like facenet-pytorch, a box that sticks out of the image is cut to its visible part
    (with its 1-based "pad" arithmetic) and that part is stretched to the square.
    Boxes with nothing visible are dropped, so the returned boxes match the crops.
    """
    h, w = img.shape[:2]
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    visible = (ey > y - 1) & (ex > x - 1)
    crops = [_area_resize(img[y[k] - 1 : ey[k], x[k] - 1 : ex[k]], size, size) for k in np.flatnonzero(visible)]
    if not crops:
        return None, boxes[:0]
    return _to_batch(crops, like), boxes[visible]


def _run_chunked(net: nn.Module, batch: torch.Tensor) -> list[np.ndarray]:
    outs = [net(batch[i : i + _CHUNK]) for i in range(0, len(batch), _CHUNK)]
    return [torch.cat(parts).float().cpu().numpy() for parts in zip(*outs)]


def _stage1(model: nn.Module, img: np.ndarray, min_face_size: float, threshold: float, factor: float) -> np.ndarray:
    """PNet over an image pyramid; returns squared candidate boxes [x1, y1, x2, y2, score]."""
    h, w = img.shape[:2]
    like = next(model.parameters())
    # Scale so that a min_face_size face becomes PNet's 12 px window, then shrink by
    # `factor` until the short side would drop below 12 px.
    scale = 12.0 / min_face_size
    short = min(h, w) * scale
    found = []
    while short >= 12:
        level = _area_resize(img, int(h * scale + 1), int(w * scale + 1))
        reg, prob = (t[0].float().cpu().numpy() for t in model.pnet(_to_batch([level], like)))
        ys, xs = np.nonzero(prob[1] >= threshold)
        if ys.size:
            # Each output cell sees a 12x12 window at stride 2 of this pyramid level.
            s = np.float32(scale)
            gx, gy = xs.astype(np.float32), ys.astype(np.float32)
            cand = np.stack(
                [
                    np.floor((2 * gx + 1) / s),
                    np.floor((2 * gy + 1) / s),
                    np.floor((2 * gx + 12) / s),
                    np.floor((2 * gy + 12) / s),
                    prob[1, ys, xs],
                    *reg[:, ys, xs],
                ],
                axis=1,
            )
            found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        scale *= factor
        short *= factor
    if not found:
        return np.zeros((0, 5), np.float32)
    cand = np.concatenate(found)
    cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
    # PNet offsets are relative to the plain box size (no +1, unlike regress).
    bw = cand[:, 2] - cand[:, 0]
    bh = cand[:, 3] - cand[:, 1]
    boxes = cand[:, :4] + cand[:, 5:9] * np.stack([bw, bh, bw, bh], axis=1)
    return square(np.concatenate([boxes, cand[:, 4:5]], axis=1))


THRESHOLDS = (0.6, 0.7, 0.7)   # PNet, RNet, ONet face probabilities, as facenet-pytorch


def detect_faces(
    model: nn.Module,
    image: np.ndarray,
    *,
    min_face_size: float = 20,
    thresholds: tuple[float, float, float] = THRESHOLDS,
    factor: float = 0.709,
) -> list[dict]:
    """Faces in one uint8 image (HxWx3 RGB, HxW gray or HxWx4 RGBA), best score first.

    Each face is {"box": [x1, y1, x2, y2], "score": float, "landmarks": [[x, y] * 5]}
    in input pixel coordinates; landmarks are left eye, right eye, nose, mouth corners.
    """
    rgb = as_rgb(image)
    if min(rgb.shape[:2]) < 12:  # smaller than PNet's window: nothing to scan
        return []
    img = rgb.astype(np.float32)  # the pyramid and crops are cut on the host (cv2), then moved
    with torch.inference_mode():
        boxes = _stage1(model, img, min_face_size, thresholds[0], factor)
    return _refine(model, img, boxes, thresholds)


def refine_faces(model: nn.Module, image: np.ndarray, boxes, thresholds: tuple[float, float, float] = THRESHOLDS) -> list[dict]:
    """The faces RNet and ONet confirm around given boxes ([x1, y1, x2, y2] rows: faces of a
    neighbouring video frame), without PNet's pyramid: a few milliseconds instead of the whole
    scan. Each box is also tried shifted by half and a whole of its width sideways and by half
    its height up and down, so a face that moved that far between frames is inside a crop.
    Same output as detect_faces."""
    rgb = as_rgb(image)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(boxes):
        return []
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]
    shifts = [(dx, dy) for dx in (0, -0.5, 0.5, -1, 1) for dy in (0, -0.5, 0.5)]
    tried = np.concatenate([boxes + size * np.array([dx, dy, dx, dy], np.float32) for dx, dy in shifts])
    tried = square(np.concatenate([tried, np.ones((len(tried), 1), np.float32)], axis=1))
    return _refine(model, rgb.astype(np.float32), tried, thresholds)


def _refine(model: nn.Module, img: np.ndarray, boxes: np.ndarray, thresholds) -> list[dict]:
    """RNet then ONet on candidate boxes (rows [x1, y1, x2, y2, score]): the cascade's faces."""
    if not len(boxes):
        return []
    height, width = img.shape[:2]
    param = next(model.parameters())
    with torch.inference_mode():
        batch, boxes = _crops(img, boxes, 24, param)
        if batch is None:
            return []
        reg, prob = _run_chunked(model.rnet, batch)
        ok = prob[:, 1] > thresholds[1]
        boxes = np.concatenate([boxes[ok, :4], prob[ok, 1:2]], axis=1)
        reg = reg[ok]
        keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = square(regress(boxes[keep], reg[keep]))
        if not len(boxes):
            return []

        batch, boxes = _crops(img, boxes, 48, param)
        if batch is None:
            return []
        reg, points, prob = _run_chunked(model.onet, batch)
    ok = prob[:, 1] > thresholds[2]
    boxes = np.concatenate([boxes[ok, :4], prob[ok, 1:2]], axis=1)
    reg, points = reg[ok], points[ok]
    # Landmarks are fractions of the ONet input box, i.e. before its own regression.
    bw = boxes[:, 2:3] - boxes[:, 0:1] + 1
    bh = boxes[:, 3:4] - boxes[:, 1:2] + 1
    landmarks = np.stack(
        [bw * points[:, :5] + boxes[:, 0:1] - 1, bh * points[:, 5:] + boxes[:, 1:2] - 1], axis=-1
    )
    boxes = regress(boxes, reg)
    keep = nms(boxes[:, :4], boxes[:, 4], 0.7, mode="min")
    boxes, landmarks = boxes[keep], landmarks[keep]

    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    faces = [
        {
            "box": [round(float(v), 2) for v in box[:4]],
            "score": round(float(box[4]), 5),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in marks],
        }
        for box, marks in zip(boxes, landmarks)
        if box[2] > box[0] and box[3] > box[1]  # nothing left after clipping
    ]
    return sorted(faces, key=lambda f: f["score"], reverse=True)
