"""MTCNN face detector (Zhang et al., 2016) on the weights shipped with facenet-pytorch.

This follows facenet-pytorch 2.6.0 (models/mtcnn.py, models/utils/detect_face.py)
step by step, but we never import that package: it pulls in torchvision, which
we do not install and which breaks beside our torch. We only read its three
state_dicts (pnet.pt, rnet.pt, onet.pt) from its data folder.
"""

from __future__ import annotations

import functools
import pathlib

import cv2
import numpy as np
import torch
from torch import nn
from engine import ModelSpec
from engine.package_files import package_folder, reason_if_missing

from .face_boxes import nms, regress, square

FACE_DETECTOR = "face-detector"
MiB = 1024**2

_MISSING = (
    "facenet-pytorch is not installed: run ./setup.sh "
    "(it installs facenet-pytorch==2.6.0 --no-deps for its MTCNN weights)"
)
_WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")
# The original feeds RNet/ONet at most this many crops at once so memory stays bounded.
_CHUNK = 512


def weights_dir() -> pathlib.Path:
    """Folder holding pnet.pt, rnet.pt and onet.pt inside the installed facenet-pytorch."""
    return package_folder("facenet_pytorch", "data", _WEIGHT_FILES, _MISSING)


# The three networks. Layer names must match the checkpoints exactly (strict loading).


class PNet(nn.Module):
    """Proposal net: fully convolutional, scans every pyramid level for 12x12 face candidates."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """Refine net: rescores and re-regresses 24x24 crops of the PNet candidates."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from Caffe/TensorFlow, whose flatten order is
        # (W, H, C); without this permute the dense layer sees scrambled features.
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output net: final score, box regression and 5 landmarks from 48x48 crops."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # same flatten-order reason as RNet
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


class MTCNN(nn.Module):
    """The three cascaded nets; calling it runs detect_faces."""

    def __init__(self):
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()

    def forward(self, image: np.ndarray, **kwargs) -> list[dict]:
        return detect_faces(self, image, **kwargs)


def load_mtcnn(device: str = "cpu", accelerate: str | None = None, cache_dir: str | None = None) -> MTCNN:
    """MTCNN with the facenet-pytorch weights, in eval mode on `device`.

    accelerate: None or "eager" (the nets as they are), "compile" (torch.compile) or "onnx"
    (exported once, cached in `cache_dir`, run by ONNX Runtime); see engine/runtimes/compiled.py.
    A net that cannot be compiled or exported runs eager; `acceleration(model)` says why.
    """
    folder = weights_dir()
    model = MTCNN()
    for name in ("pnet", "rnet", "onet"):
        state = torch.load(folder / f"{name}.pt", weights_only=True, map_location="cpu")
        getattr(model, name).load_state_dict(state, strict=True)
    model = model.eval().requires_grad_(False).to(device)
    if accelerate not in (None, "eager"):
        _accelerate_nets(model, accelerate, cache_dir)
    return model


# Bump when a net's forward changes: the exported ONNX files are cached under these names.
_EXPORT_KEYS = {"pnet": "mtcnn-pnet-v1", "rnet": "mtcnn-rnet-v1", "onet": "mtcnn-onet-v1"}


def _pyramid_sizes(height: int, width: int, min_face_size: float = 20, factor: float = 0.709) -> list[tuple[int, int]]:
    """The (h, w) of each PNet pyramid level, as _stage1 computes them."""
    scale = 12.0 / min_face_size
    short = min(height, width) * scale
    sizes = []
    while short >= 12:
        sizes.append((int(height * scale + 1), int(width * scale + 1)))
        scale *= factor
        short *= factor
    return sizes


def example_inputs(device: str = "cpu") -> dict[str, list[tuple[torch.Tensor]]]:
    """Inputs shaped like detect_faces' calls, per net: PNet on the pyramid of a 512 px photo
    (torch.compile specialises on some size properties, so it should meet them all while
    preparing), RNet / ONet on a batch of crops and on a single crop (a size of 1 is a case of
    its own for torch.compile). The first of each is what the ONNX export traces."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.rand(*shape, generator=gen) * 2 - 1).to(device)

    return {
        "pnet": [(rand(1, 3, h, w),) for h, w in _pyramid_sizes(512, 512)],
        "rnet": [(rand(7, 3, 24, 24),), (rand(1, 3, 24, 24),)],
        "onet": [(rand(5, 3, 48, 48),), (rand(1, 3, 48, 48),)],
    }


def _accelerate_nets(model: MTCNN, mode: str, cache_dir: str | None) -> None:
    from engine.runtimes.compiled import accelerate

    device = str(next(model.parameters()).device)
    for name, examples in example_inputs(device).items():
        net = getattr(model, name)
        setattr(model, name, accelerate(net, examples, mode, cache_dir, _EXPORT_KEYS[name]))


def acceleration(model: MTCNN) -> dict[str, dict]:
    """Per net: the mode it runs in, the preparation time, and why it fell back to eager if so."""
    out = {}
    for name in ("pnet", "rnet", "onet"):
        info = getattr(getattr(model, name), "info", None)
        out[name] = info.as_dict() if info is not None else {"requested": "eager", "mode": "eager"}
    return out


# Detection pipeline. Boxes are numpy rows [x1, y1, x2, y2, score, ...] in input pixels.


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


def _stage1(model: MTCNN, img: np.ndarray, min_face_size: float, threshold: float, factor: float) -> np.ndarray:
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


def detect_faces(
    model: MTCNN,
    image: np.ndarray,
    *,
    min_face_size: float = 20,
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    factor: float = 0.709,
) -> list[dict]:
    """Faces in one uint8 image (HxWx3 RGB, HxW gray or HxWx4 RGBA), best score first.

    Each face is {"box": [x1, y1, x2, y2], "score": float, "landmarks": [[x, y] * 5]}
    in input pixel coordinates; landmarks are left eye, right eye, nose, mouth corners.
    """
    rgb = as_rgb(image)
    height, width = rgb.shape[:2]
    if min(height, width) < 12:  # smaller than PNet's window: nothing to scan
        return []
    param = next(model.parameters())
    with torch.inference_mode():
        img = rgb.astype(np.float32)  # the pyramid and crops are cut on the host (cv2), then moved

        boxes = _stage1(model, img, min_face_size, thresholds[0], factor)
        if not len(boxes):
            return []

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


def unavailable_reason() -> str | None:
    return reason_if_missing(weights_dir)


def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            # ONNX Runtime runs detect_faces faster than eager (bench/compile.py); the export is
            # paid once per machine and cached by weights hash and versions.
            name=FACE_DETECTOR, role="interactive", runtime="torch",
            loader=functools.partial(load_mtcnn, accelerate="onnx"),
            source="facenet-pytorch 2.6.0 wheel: MTCNN pnet.pt, rnet.pt, onet.pt",
            estimate_bytes=2 * MiB, run_estimate_bytes=64 * MiB, max_instances=2,
            # MTCNN's pyramid cost grows with pixels: at 960x540 a 720p frame takes ~half the time
            # of full size and faces from ~27 px (720p) / ~40 px (1080p) are still found.
            max_pixels=960 * 540,
            function="face detection (boxes, 5 landmarks)", networks=3,
            description="MTCNN: face boxes and 5 landmarks; shared by every face feature"),
    ]
