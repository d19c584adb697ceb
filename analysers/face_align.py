"""Face crops for the networks that take an aligned face (restoration, swap; issue 20), and the way
back: the five landmarks of the one face detector fitted to a network's template, the crop, and
the paste-back under a soft box mask, as FaceFusion does it (docs/face_studio_facts.md §5:
cv2.estimateAffinePartial2D with RANSAC, threshold 100, which keeps all five points; its
create_box_mask and paste_back)."""
from __future__ import annotations

import functools

import cv2
import numpy as np

from engine.media.video import limit_pixels

from . import face_detector

MASK_BLUR = 0.3   # FaceFusion's default face_mask_blur (its padding is 0 for these networks)


def find_faces(detector, image: np.ndarray, max_pixels: int | None) -> list[dict]:
    """Faces of image, largest box first (detected on a copy shrunk to the detector's limit),
    landmarks and boxes in its pixels."""
    small, scale = limit_pixels(image, max_pixels) if max_pixels else (image, 1.0)
    faces = [{**f, "landmarks": [[x / scale, y / scale] for x, y in f["landmarks"]],
              "box": [v / scale for v in f["box"]]} for f in face_detector.detect_faces(detector, small)]
    return sorted(faces, key=lambda f: -(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))


def align(image: np.ndarray, landmarks, template: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The size x size crop of one face on template (five points, in crop pixels) and its 2x3
    affine (image -> crop)."""
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(points, template, method=cv2.RANSAC, ransacReprojThreshold=100)
    if matrix is None:
        raise ValueError("the landmarks do not define a similarity")
    crop = cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_AREA)
    return crop, matrix


@functools.lru_cache(maxsize=8)
def box_mask(size: int, blur: float = MASK_BLUR) -> np.ndarray:
    """FaceFusion's create_box_mask with zero padding: ones, a border of blur_area zeroed, then a
    Gaussian of sigma blur_amount / 4 (float32 [size, size] in [0, 1], read-only)."""
    blur_amount = int(size * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    mask = np.ones((size, size), np.float32)
    mask[:blur_area], mask[-blur_area:], mask[:, :blur_area], mask[:, -blur_area:] = 0, 0, 0, 0
    if blur_amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur_amount * 0.25)
    mask.flags.writeable = False
    return mask


def paste_back(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray,
               blend: float = 1.0) -> np.ndarray:
    """frame with crop warped back by the inverse of matrix under mask (times blend, the share of
    the crop), only inside the box the crop covers."""
    height, width = frame.shape[:2]
    size = crop.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    x1, y1 = np.clip(np.floor(mapped.min(axis=0)).astype(int), 0, [width, height])
    x2, y2 = np.clip(np.ceil(mapped.max(axis=0)).astype(int), 0, [width, height])
    if x2 <= x1 or y2 <= y1:
        return frame
    inverse[:, 2] -= (x1, y1)
    box = (int(x2 - x1), int(y2 - y1))
    alpha = np.clip(cv2.warpAffine(mask, inverse, box), 0, 1)[..., None] * blend
    face = cv2.warpAffine(crop, inverse, box, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    out = frame.copy()
    region = out[y1:y2, x1:x2].astype(np.float32)
    out[y1:y2, x1:x2] = np.clip(np.round(region * (1 - alpha) + face * alpha), 0, 255).astype(frame.dtype)
    return out


def match_colour(face: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """face (uint8 RGB) with the colour statistics of reference (the same crop before the network
    changed it): Reinhard et al.'s colour transfer, per channel mean and standard deviation in
    L*a*b*, measured where mask > 0.5, the way DeepFaceLab's "rct" mode limits them to the face."""
    inside = mask > 0.5
    lab = [cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB) for image in (face, reference)]
    (f_mean, f_std), (r_mean, r_std) = ((x[inside].mean(axis=0), x[inside].std(axis=0)) for x in lab)
    # A flat channel (a one-colour face; float32 sums leave it a std of ~0.01) has nothing to
    # stretch: it only takes the reference's mean. 0.1 is a tenth of a just visible difference.
    scale = np.where(f_std > 0.1, r_std / np.maximum(f_std, 0.1), 1.0)
    moved = (lab[0] - f_mean) * scale + r_mean
    moved[..., 0] = np.clip(moved[..., 0], 0, 100)
    rgb = cv2.cvtColor(moved.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
