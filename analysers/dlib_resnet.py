"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat) read into torch.

We parse dlib's DNN serialization ourselves (numpy, no dlib) and build the same network in torch.
Facts from dlib 20.0 (github.com/davisking/dlib):
- dlib/serialize.h: an integer is a control byte (low 4 bits: byte count, 0x80: negative) then
  that many little-endian bytes; a float/double is two integers, mantissa then exponent
  (value = mantissa * 2**exponent); a string is its length then its bytes; a bool is '1' or '0'.
- dlib/cuda/tensor.h: a tensor is version 2, num_samples, k, nr, nc, then little-endian float32s;
  an alias_tensor (a view into a layer's params) is version 1 and its four dimensions.
- dlib/dnn/core.h: a network is a chain, serialized outermost first: the loss layer writes its
  details before its subnet, every other add_layer writes its subnet first, so the layers'
  details come out input first. Tags and skips write only a version.
- tools/python/src/face_recognition.cpp: the net (anet_type) and the input: 150x150 RGB chips,
  (pixel - mean) / 256 with the means stored in the file. The output is the fc layer's 128
  numbers as they are: loss_metric adds no normalisation (norms 1.24 to 1.51 on 100 LFW faces).
- dlib/dnn/layers.h: a conv with stride 2 has no padding (stride 1: kernel // 2); pools likewise;
  affine is a per-channel scale and shift (batch norm frozen after training); add_prev of two
  tensors of different sizes zero-pads the smaller one at the end of each dimension (cpu_dlib.cpp
  tt::add), which happens where a 3x3 block output meets a 4x4 average-pooled shortcut.
The released file holds affine layers; a batch norm still in training form (bn_con2) is frozen
here the way dlib's affine_(bn_) constructor does it. Reading the 22.5 MB file takes ~3 ms and
building the module ~30 ms, so the converted weights are not cached.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CHIP = 150  # the network's input size, and dlib.get_face_chip's size for it
# The exported ONNX file's name stem: bump it when FaceResNet's forward or the conversion changes.
EXPORT_KEY = "dlib-face-resnet-v1"


class Reader:
    """Sequential reader of dlib's serialization format over bytes."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise ValueError(f"the file ends at byte {len(self.data)}, {size} more bytes were expected "
                             f"at byte {self.pos}: it is cut short")

    def int(self) -> int:
        self._need(1)
        control = self.data[self.pos]
        size = control & 0x0F
        if control & 0x70 or size > 8 or size == 0:
            raise ValueError(f"not a dlib integer at byte {self.pos} (control byte {control:#x})")
        self._need(1 + size)
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # dlib's float_details codes for inf, -inf and nan
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        size = self.int()
        self._need(size)
        text = self.data[self.pos:self.pos + size].decode("latin-1")
        self.pos += size
        return text

    def bool(self) -> bool:
        self._need(1)
        byte = self.data[self.pos:self.pos + 1]
        if byte not in (b"0", b"1"):
            raise ValueError(f"not a dlib bool at byte {self.pos}: {byte!r}")
        self.pos += 1
        return byte == b"1"

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        version = self.int()
        if version not in allowed:
            raise ValueError(f"{what}: unexpected version {version} at byte {self.pos}")
        return version

    def tensor(self) -> np.ndarray:
        self.version((2,), "tensor")
        shape = tuple(self.int() for _ in range(4))
        count = math.prod(shape)
        self._need(4 * count)
        values = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape)
        self.pos += 4 * count
        return values

    def alias(self) -> tuple[int, ...]:
        self.version((1,), "alias_tensor")
        return tuple(self.int() for _ in range(4))

    def name(self, *allowed: str) -> str:
        name = self.string()
        if name not in allowed:
            raise ValueError(f"expected one of {allowed} at byte {self.pos}, found {name!r}")
        return name


# ---- the layer details (dlib/dnn/layers.h), each returning what the torch net needs ----


def _con(r: Reader) -> dict:
    version = r.name("con_4", "con_5", "con_6")
    params = r.tensor().reshape(-1)
    filters, nr, nc = r.int(), r.int(), r.int()
    stride = (r.int(), r.int())
    padding = (r.int(), r.int())
    shape, bias_shape = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    use_bias = r.bool() if version in ("con_5", "con_6") else True
    if version == "con_6" and r.bool():
        raise ValueError("con layer with a fused relu: not in this network")
    size = math.prod(shape)
    weight = params[:size].reshape(shape)
    bias = params[size:size + math.prod(bias_shape)] if use_bias else np.zeros(filters, np.float32)
    assert weight.shape[0] == filters and weight.shape[2:] == (nr, nc)
    return {"kind": "con", "weight": weight, "bias": bias, "stride": stride, "padding": padding}


def _affine(r: Reader) -> dict:
    version = r.name("affine_", "affine_2", "bn_con2")
    params = r.tensor().reshape(-1)
    gamma_shape, _ = r.alias(), r.alias()
    size = math.prod(gamma_shape)
    gamma, beta = params[:size], params[size:2 * size]
    if version == "bn_con2":  # a batch norm still in training form: freeze it as dlib does
        r.tensor(), r.tensor()  # means and inverse deviations of the last training batch
        running_means, running_vars = r.tensor().reshape(-1), r.tensor().reshape(-1)
        r.int(), r.int()  # update count, window size
        for _ in range(4):
            r.float()
        eps = r.float()
        gamma = (gamma / np.sqrt(running_vars + np.float32(eps))).astype(np.float32)
        beta = (beta - gamma * running_means).astype(np.float32)
        return {"kind": "affine", "gamma": gamma, "beta": beta}
    if r.int() != 0:  # layer_mode: 0 is CONV_MODE (per channel)
        raise ValueError("affine layer not in per-channel mode")
    if version == "affine_2" and r.bool():
        raise ValueError("disabled affine layer: not in this network")
    return {"kind": "affine", "gamma": gamma, "beta": beta}


def _relu(r: Reader) -> dict:
    if r.name("relu_", "relu_2") == "relu_2" and r.bool():
        raise ValueError("disabled relu: not in this network")
    return {"kind": "relu"}


def _pool(r: Reader, kind: str) -> dict:
    r.name(f"{kind}_2")
    window, stride, padding = (r.int(), r.int()), (r.int(), r.int()), (r.int(), r.int())
    return {"kind": kind, "window": window, "stride": stride, "padding": padding}


def _fc(r: Reader) -> dict:
    version = r.name("fc_2", "fc_3")
    outputs, inputs = r.int(), r.int()
    params = r.tensor().reshape(-1)
    shape, _ = r.alias(), r.alias()
    if r.int() != 1:  # fc_bias_mode: 1 is FC_NO_BIAS, what anet_type declares
        raise ValueError("fc layer with a bias: not this network")
    for _ in range(4):
        r.float()
    if version == "fc_3":
        r.bool()
    weight = params[:math.prod(shape)].reshape(shape[0], shape[1] * shape[2] * shape[3])
    assert weight.shape == (inputs, outputs)
    return {"kind": "fc", "weight": weight}


_DETAILS = {"con": _con, "affine": _affine, "relu": _relu, "fc": _fc,
            "max_pool": lambda r: _pool(r, "max_pool"), "avg_pool": lambda r: _pool(r, "avg_pool"),
            "add_prev": lambda r: (r.name("add_prev_"), {"kind": "add_prev"})[1]}


# ---- the network's layers, outermost first, as anet_type in face_recognition.cpp declares ----


# block<N,BN,stride,S> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,S>>>>>, BN = affine
_BLOCK = ["affine", "con", "relu", "affine", "con"]
# ares<N,S> = relu<add_prev1<block<N,affine,1,tag1<S>>>>
_ARES = ["relu", "add_prev"] + _BLOCK + ["tag"]
# ares_down<N,S> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<S>>>>>>>
_ARES_DOWN = ["relu", "add_prev", "avg_pool", "skip", "tag"] + _BLOCK + ["tag"]

# loss_metric<fc_no_bias<128,avg_pool_everything<alevel0<...alevel4<max_pool<3,3,2,2,relu<affine<
# con<32,7,7,2,2,input_rgb_image_sized<150>>>>>>>>>>>>, alevel0 = ares_down<256>, alevel1 = ares<256,
# ares<256,ares_down<256>>>, alevel2 the same with 128, alevel3 = 3 ares<64> on ares_down<64>,
# alevel4 = 3 ares<32>. The channel counts and strides come from the file.
LAYERS = (["fc", "avg_pool"] + _ARES_DOWN + 2 * _ARES + _ARES_DOWN + 2 * _ARES + _ARES_DOWN
          + 3 * _ARES + _ARES_DOWN + 3 * _ARES + ["max_pool", "relu", "affine", "con"])


def read(data: bytes) -> tuple[np.ndarray, list[dict]]:
    """(the input means (R, G, B), the layers input first) of the serialized anet_type.
    ValueError when the bytes are not that network (cut short, another net, another format)."""
    r = Reader(data)
    r.version((1,), "add_loss_layer")
    if r.name("loss_metric_", "loss_metric_2") == "loss_metric_2":
        r.float(), r.float()  # margin and distance threshold, for training only
    versions = []
    for kind in LAYERS[:-1]:
        versions.append(r.version((1,) if kind in ("tag", "skip") else (1, 2), kind))
    last = r.version((2, 3), "input add_layer")
    r.name("input_rgb_image_sized")
    means = np.array([r.float(), r.float(), r.float()], np.float32)
    if (r.int(), r.int()) != (CHIP, CHIP):
        raise ValueError(f"the network's input is not {CHIP}x{CHIP}")
    layers = [_con(r)]
    for _ in range(3):  # setup called, gradient stale, outputs disabled
        r.bool()
    r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, grad_final
    if last == 3:
        r.int()  # sample expansion factor
    for kind, version in zip(reversed(LAYERS[:-1]), reversed(versions)):
        if kind in ("tag", "skip"):
            layers.append({"kind": kind})
            continue
        layers.append(_DETAILS[kind](r))
        for _ in range(3):
            r.bool()
        r.tensor(), r.tensor()  # x_grad, cached_output
        if version == 2:
            r.tensor()  # params_grad
    if r.pos != len(data):
        raise ValueError(f"{len(data) - r.pos} bytes left after the network: not anet_type")
    return means, layers


# ---- the torch network ----


def _folded(con: dict, affine: dict) -> nn.Conv2d:
    """The conv with the affine after it folded in: conv(x) * g + b is one conv."""
    weight, gamma = torch.from_numpy(con["weight"].copy()), torch.from_numpy(affine["gamma"].copy())
    out_channels, in_channels, kh, kw = weight.shape
    # On the meta device: no random initialisation (it took 0.25 s), the weights replace it.
    conv = nn.Conv2d(in_channels, out_channels, (kh, kw), con["stride"], con["padding"], device="meta")
    conv.weight = nn.Parameter(weight * gamma[:, None, None, None])
    beta = torch.from_numpy(affine["beta"].copy())
    conv.bias = nn.Parameter(torch.from_numpy(con["bias"].copy()) * gamma + beta)
    return conv


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b as dlib's add_prev: a smaller tensor is zero-padded at the end of each dimension."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t):
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class Unit(nn.Module):
    """dlib's ares (down=False) or ares_down: relu(block(x) + x), the shortcut 2x2-average-pooled
    when the block has stride 2."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, down: bool):
        super().__init__()
        self.conv1, self.conv2, self.down = conv1, conv2, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        if self.down:
            x = F.avg_pool2d(x, 2, 2)
        return F.relu(_add_padded(y, x))


class FaceResNet(nn.Module):
    """uint8 chips (N, 150, 150, 3), RGB as dlib.get_face_chip gives them -> (N, 128) float32
    embeddings, dlib's face_recognition_model_v1 descriptors."""

    def __init__(self, means: np.ndarray, layers: list[dict]):
        super().__init__()
        self.register_buffer("means", torch.from_numpy(means.astype(np.float32)).view(1, 3, 1, 1))
        kinds = [layer["kind"] for layer in layers]
        if kinds[:4] != ["con", "affine", "relu", "max_pool"] or kinds[-2:] != ["avg_pool", "fc"]:
            raise ValueError(f"not dlib's face ResNet: {kinds[:4]} ... {kinds[-2:]}")
        self.stem = _folded(layers[0], layers[1])
        pool = layers[3]
        self.pool = (pool["window"], pool["stride"], pool["padding"])
        units, body = [], layers[4:-2]
        while body:  # each unit: tag ... add_prev, relu
            end = [layer["kind"] for layer in body].index("add_prev") + 2
            unit, body = body[:end], body[end:]
            convs = [layer for layer in unit if layer["kind"] == "con"]
            affines = [layer for layer in unit if layer["kind"] == "affine"]
            pools = [layer for layer in unit if layer["kind"] == "avg_pool"]
            if any((p["window"], p["stride"], p["padding"]) != ((2, 2), (2, 2), (0, 0)) for p in pools):
                raise ValueError(f"unexpected shortcut pooling {pools}")
            down = bool(pools)
            units.append(Unit(_folded(convs[0], affines[0]), _folded(convs[1], affines[1]), down))
        self.units = nn.Sequential(*units)
        if layers[-2]["window"] != (0, 0):  # 0: the whole input (avg_pool_everything)
            raise ValueError(f"unexpected final pooling {layers[-2]}")
        weight = layers[-1]["weight"]
        self.fc = nn.Linear(weight.shape[0], weight.shape[1], bias=False, device="meta")
        self.fc.weight = nn.Parameter(torch.from_numpy(weight.T.copy()))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        # dlib's input_rgb_image_sized: (pixel - mean) / 256, channels R, G, B.
        x = (chips.permute(0, 3, 1, 2).float() - self.means) / 256
        x = F.relu(self.stem(x))
        x = F.max_pool2d(x, *self.pool)
        x = self.units(x)
        return self.fc(x.mean(dim=(2, 3)))  # avg_pool_everything, then fc_no_bias


def load(path: str | Path, device: str = "cpu") -> FaceResNet:
    """The network of a dlib_face_recognition_resnet_model_v1.dat, in eval mode on `device`."""
    means, layers = read(Path(path).read_bytes())
    return FaceResNet(means, layers).eval().requires_grad_(False).to(device)


def example_inputs(device: str = "cpu") -> list[tuple[torch.Tensor]]:
    """Chips as embed() passes them: a batch (what the ONNX export traces, batch size left
    dynamic) and a single face. Random pixels: the export is checked against eager on them."""
    gen = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 256, (n, CHIP, CHIP, 3), generator=gen, dtype=torch.uint8).to(device),)
            for n in (4, 1)]
