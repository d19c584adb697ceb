"""MTCNN face detector (Zhang et al., 2016) on the weights shipped with facenet-pytorch.

This follows facenet-pytorch 2.6.0 (models/mtcnn.py, models/utils/detect_face.py)
step by step, but we never import that package: it pulls in torchvision, which
we do not install and which breaks beside our torch. We only read its three
state_dicts (pnet.pt, rnet.pt, onet.pt) from its data folder.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np
import torch
from torch import nn
from engine import ModelSpec
from engine.package_files import package_folder, reason_if_missing

from .mtcnn_cascade import as_rgb, detect_faces, refine_faces  # noqa: F401  (the detector's API)

FACE_DETECTOR = "face-detector"
MiB = 1024**2

_MISSING = (
    "facenet-pytorch is not installed: run ./setup.sh "
    "(it installs facenet-pytorch==2.6.0 --no-deps for its MTCNN weights)"
)
_WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")


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
