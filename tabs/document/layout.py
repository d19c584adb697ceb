"""PP-PicoDet layout regions: the input the CDLA net wants and the decoding of its eight outputs
(numpy only). The facts and their source are in model.py's docstring."""
from __future__ import annotations

import cv2
import numpy as np

from .model import (CANDIDATES_PER_STRIDE, IOU, KEEP, NET_HEIGHT, NET_WIDTH, NMS_CANDIDATES, STRIDES,
                    Net, _normalise)

PAD_BEYOND = 1.25   # aspect ratios further off the net's than this are padded (see layout_input)


def border_colour(rgb: np.ndarray) -> np.ndarray:
    """The median colour of the outermost rows and columns: the paper, on most scans."""
    edge = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return np.median(edge, axis=0).astype(np.uint8)


def layout_input(rgb: np.ndarray, mode: str = "pad") -> tuple[np.ndarray, float, float]:
    """The net's [1, 3, 800, 608] input and the factors (x, y) from net pixels to page pixels.

    mode "pad": a page whose aspect ratio is more than 1.25 times off the net's (608:800) is first
    extended right or down with its border colour to that ratio, so letters keep their shape;
    A4 and Letter portrait pages are resized as they are, as in training. "stretch": always
    resized as it is (the package's way).

    Measured: skimage's page (2:1) stretched reads its paragraph as a title (0.56), padded as
    text (0.93); a Letter page's caption scores 0.81 as it is, and 0.36 padded by 18 px.
    """
    height, width = rgb.shape[:2]
    target = NET_WIDTH / NET_HEIGHT
    if mode == "pad" and max(width / height / target, target * height / width) > PAD_BEYOND:
        pad_w, pad_h = max(0, round(height * target) - width), max(0, round(width / target) - height)
        if pad_w or pad_h:
            canvas = np.empty((height + pad_h, width + pad_w, 3), np.uint8)
            canvas[:] = border_colour(rgb)
            canvas[:height, :width] = rgb
            rgb = canvas
    elif mode not in ("pad", "stretch"):
        raise ValueError(f"mode must be 'pad' or 'stretch', not {mode!r}")
    h, w = rgb.shape[:2]
    # cv2's default (bilinear) resize, as the package's pre_process.py.
    resized = cv2.resize(rgb, (NET_WIDTH, NET_HEIGHT))
    return _normalise(resized)[None], w / NET_WIDTH, h / NET_HEIGHT


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def decode(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Candidate boxes [n, 4] (x1, y1, x2, y2 in net pixels) and class scores [n, classes]: for
    each stride the 1000 cells whose best class scores highest."""
    half = len(outputs) // 2
    boxes, scores = [], []
    for stride, score, dist in zip(STRIDES, outputs[:half], outputs[half:]):
        score, dist = score[0], dist[0]
        bins = dist.shape[-1] // 4
        rows, cols = int(np.ceil(NET_HEIGHT / stride)), int(np.ceil(NET_WIDTH / stride))
        yy, xx = np.mgrid[0:rows, 0:cols]
        centres = np.stack([(xx.ravel() + 0.5) * stride, (yy.ravel() + 0.5) * stride] * 2, axis=1)
        # GFL: each side's distance is the expected bin of a softmax over the bins, in strides.
        distance = (_softmax(dist.reshape(-1, 4, bins)) * np.arange(bins)).sum(axis=-1) * stride
        top = np.argsort(score.max(axis=1))[::-1][:CANDIDATES_PER_STRIDE]
        boxes.append(centres[top] + np.array([-1, -1, 1, 1]) * distance[top])
        scores.append(score[top])
    return np.concatenate(boxes), np.concatenate(scores)


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(boxes[:, :2], box[:2]), np.minimum(boxes[:, 2:], box[2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(axis=1)
    return inter / (area + np.clip(box[2:] - box[:2], 0, None).prod() - inter + 1e-5)


def hard_nms(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    """Indices kept, best first: the 200 best candidates, each dropping those it overlaps by IoU
    above 0.5, at most 100 kept (the package's hard_nms)."""
    order = list(np.argsort(scores)[-NMS_CANDIDATES:][::-1])
    kept = []
    while order and len(kept) < KEEP:
        best, order = order[0], np.array(order[1:], dtype=int)
        kept.append(int(best))
        if len(order) == 0:
            break
        order = list(order[_iou(boxes[order], boxes[best]) <= IOU])
    return kept


def find_regions(net: Net, rgb: np.ndarray, min_score: float, mode: str = "pad") -> list[dict]:
    """Layout regions of an upright page: [{"label", "box": [x1, y1, x2, y2] (page pixels),
    "score"}], best first; a region scoring under `min_score` is left out."""
    tensor, sx, sy = layout_input(rgb, mode)
    outputs = net.session.run(None, {"image": tensor})
    boxes, scores = decode(outputs)
    # The package clips to the net's frame before scaling back; with "pad" the frame includes the
    # padding, so clip to the page itself too.
    height, width = rgb.shape[:2]
    boxes = np.clip(boxes, 0, [NET_WIDTH, NET_HEIGHT] * 2) * [sx, sy, sx, sy]
    boxes = np.minimum(boxes, [width, height] * 2)
    # A candidate lying in the padding is clipped to a sliver of the page edge: not a region.
    real = ((boxes[:, 2:] - boxes[:, :2]) >= 2).all(axis=1)
    boxes, scores = boxes[real], scores[real]
    regions = []
    for index, label in enumerate(net.labels):
        chosen = np.nonzero(scores[:, index] > min_score)[0]
        for i in chosen[hard_nms(boxes[chosen], scores[chosen, index])] if len(chosen) else []:
            regions.append({"label": label, "box": [round(float(v), 1) for v in boxes[i]],
                            "score": round(float(scores[i, index]), 4)})
    return sorted(regions, key=lambda r: -r["score"])


# ------------------------------------------------------------------------------ drawing

# One colour per CDLA class, so a glance tells text from figures and tables.
COLOURS = {"text": (0, 160, 0), "title": (200, 0, 0), "figure": (0, 90, 220), "figure_caption": (0, 170, 200),
           "table": (220, 120, 0), "table_caption": (200, 160, 0), "header": (140, 0, 170),
           "footer": (140, 80, 170), "reference": (120, 120, 120), "equation": (220, 0, 140)}


def draw_regions(rgb: np.ndarray, regions: list[dict]) -> np.ndarray:
    """A copy of the page with each region outlined in its class colour and labelled above."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    line = max(1, round(min(canvas.size) / 300))   # strokes and labels scale with the page
    font = ImageFont.load_default(size=max(10, min(28, round(min(canvas.size) / 45))))
    for region in sorted(regions, key=lambda r: r["score"]):   # the best drawn last, on top
        colour = COLOURS.get(region["label"], (255, 0, 0))
        x1, y1, x2, y2 = region["box"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        label = f"{region['label']} {region['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        ty = y1 - (bottom - top) - 2 * line if y1 - (bottom - top) - 2 * line >= 0 else y1 + line
        draw.rectangle([x1, ty, x1 + right - left + 2 * line, ty + bottom - top + 2 * line], fill=colour)
        draw.text((x1 + line - left, ty + line - top), label, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)
