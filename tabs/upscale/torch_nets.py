"""Real-ESRGAN's two published architectures in torch, filled with the ncnn weights we ship.

SRVGGNetCompact (realesr-animevideov3): conv + PReLU x (num_conv + 1), a last conv to
3 * upscale^2 channels, pixel shuffle, plus the nearest-upsampled input (the net learns a residual).
RRDBNet (RealESRGAN_x4plus): conv_first, num_block RRDBs (3 dense blocks of 5 convs each,
residuals scaled by 0.2), conv_body + skip, two (nearest x2, conv, leaky ReLU 0.2) steps, conv_hr,
conv_last. Written from the papers' published structure (Real-ESRGAN, ESRGAN); parameter names
follow upstream, so upstream .pth files would load too.

The ncnn x2 (and x3) animevideov3 nets are the x4 net followed by a bicubic resize by 0.5 (0.75):
`Resized` adds that step. `state_from_ncnn` checks the .param's structure against the torch net (layer
count, shapes, fused activations) before copying a single weight.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.runtimes.ncnn_weights import Layer, read_model

CONVERTER_VERSION = 1   # bump when the conversion changes: cached state files are keyed by it
LEAKY_SLOPE = 0.2


class SRVGGNetCompact(nn.Module):
    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4):
        super().__init__()
        self.upscale = upscale
        layers = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat=64, num_grow_ch=32):
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv{i}", nn.Conv2d(num_feat + (i - 1) * num_grow_ch, num_grow_ch, 3, 1, 1))
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), LEAKY_SLOPE))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat=64, num_grow_ch=32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """The x4 RRDBNet (upstream's x2/x1 variants pixel-unshuffle first; no such weights ship here)."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32):
        super().__init__()
        self.upscale = 4
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), LEAKY_SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), LEAKY_SLOPE))


def bicubic(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, C, h, w] resized to `size` as ncnn's Interp type 3 does: a = -0.75, half-pixel centres,
    edges clamped, no antialiasing (torch's bicubic is the same filter)."""
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False)


class Resized(nn.Module):
    """`net`, then a bicubic resize of its output by `factor` (ncnn's Interp type 3, see bicubic)."""

    def __init__(self, net: nn.Module, factor: float):
        super().__init__()
        self.net, self.factor = net, float(factor)
        self.upscale = net.upscale * self.factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        size = (round(x.shape[2] * self.upscale), round(x.shape[3] * self.upscale))
        return bicubic(out, size)


# ----------------------------------------------------------------------------- from ncnn

def _config(layers: list[Layer]) -> dict:
    """The architecture and its sizes, read from the ncnn graph."""
    convs = [l for l in layers if l.type == "Convolution"]
    kinds = {l.type for l in layers}
    if not convs:
        raise ValueError("no convolutions in this ncnn net")
    if "PReLU" in kinds:
        shuffle = next((l for l in layers if l.type == "PixelShuffle"), None)
        if shuffle is None:
            raise ValueError("an SRVGGNetCompact without its pixel shuffle")
        config = {"arch": "srvgg", "num_feat": convs[0].get(0), "num_conv": len(convs) - 2,
                  "upscale": shuffle.get(0)}
    elif "Eltwise" in kinds:
        if (len(convs) - 6) % 15:
            raise ValueError(f"{len(convs)} convolutions do not make an RRDBNet")
        config = {"arch": "rrdb", "num_feat": convs[0].get(0), "num_block": (len(convs) - 6) // 15,
                  "num_grow_ch": convs[1].get(0)}
    else:
        raise ValueError("neither SRVGGNetCompact (PReLU) nor RRDBNet (Eltwise) in this ncnn net")
    # A bicubic resize of the output (the x2/x3 animevideov3 nets): its height factor.
    last = layers[-1]
    if last.type == "Interp" and last.get(0) == 3:
        config["resize"] = float(last.get(1, 1.0))
    return config


def build(config: dict) -> nn.Module:
    if config["arch"] == "srvgg":
        net = SRVGGNetCompact(num_feat=config["num_feat"], num_conv=config["num_conv"], upscale=config["upscale"])
    elif config["arch"] == "rrdb":
        net = RRDBNet(num_feat=config["num_feat"], num_block=config["num_block"], num_grow_ch=config["num_grow_ch"])
    else:
        raise ValueError(f"unknown architecture {config['arch']!r}")
    return Resized(net, config["resize"]) if "resize" in config else net


def _fused_leaky(net: nn.Module) -> list[bool]:
    """For each Conv2d of `net` in order: is it followed by a leaky ReLU (which ncnn fuses in)?"""
    convs = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if not isinstance(net, RRDBNet):
        return [False] * len(convs)
    return [name.split(".")[-1] in ("conv1", "conv2", "conv3", "conv4", "conv_up1", "conv_up2", "conv_hr")
            for name in convs]


def state_from_ncnn(layers: list[Layer], net: nn.Module) -> dict[str, torch.Tensor]:
    """`net`'s state dict with the ncnn weights, matched by order after checking every shape."""
    inner = net.net if isinstance(net, Resized) else net
    convs = [l for l in layers if l.type == "Convolution"]
    prelus = [l for l in layers if l.type == "PReLU"]
    torch_convs = [(n, m) for n, m in inner.named_modules() if isinstance(m, nn.Conv2d)]
    torch_prelus = [(n, m) for n, m in inner.named_modules() if isinstance(m, nn.PReLU)]
    if len(convs) != len(torch_convs) or len(prelus) != len(torch_prelus):
        raise ValueError(f"ncnn has {len(convs)} convs / {len(prelus)} PReLUs, the torch net "
                         f"{len(torch_convs)} / {len(torch_prelus)}")
    prefix = "net." if inner is not net else ""
    state = {}
    for layer, (name, conv), leaky in zip(convs, torch_convs, _fused_leaky(inner)):
        weight = layer.weights["weight"]
        if tuple(weight.shape) != tuple(conv.weight.shape) or "bias" not in layer.weights:
            raise ValueError(f"{layer.name}: weights {weight.shape} do not fit {name} {tuple(conv.weight.shape)}")
        if (layer.get(3, 1), layer.get(2, 1), layer.get(4, 0)) != (1, 1, 1):
            raise ValueError(f"{layer.name}: only stride 1, dilation 1, padding 1 convolutions are expected")
        fused = layer.get(9, 0)
        if fused != (2 if leaky else 0) or (leaky and abs(layer.get(10, [0.0])[0] - LEAKY_SLOPE) > 1e-6):
            raise ValueError(f"{layer.name}: activation {fused} where {name} expects "
                             f"{'a leaky ReLU 0.2' if leaky else 'none'}")
        state[f"{prefix}{name}.weight"] = torch.from_numpy(weight.copy())
        state[f"{prefix}{name}.bias"] = torch.from_numpy(layer.weights["bias"].copy())
    for layer, (name, prelu) in zip(prelus, torch_prelus):
        slope = layer.weights["slope"]
        if slope.shape != tuple(prelu.weight.shape):
            raise ValueError(f"{layer.name}: {slope.shape[0]} slopes do not fit {name}")
        state[f"{prefix}{name}.weight"] = torch.from_numpy(slope.copy())
    return state


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:16]


def _filled(config: dict, state: dict[str, torch.Tensor]) -> nn.Module:
    """The net built on the meta device and given `state`'s tensors (strict: every parameter
    filled, nothing left over): x4plus's 16.7 M parameters are not first randomly initialised,
    which took seconds."""
    with torch.device("meta"):
        net = build(config)
    net.load_state_dict(state, assign=True)
    return net.eval().requires_grad_(False)


def convert(param_path: Path | str, bin_path: Path | str, cache_dir: Path | str | None = None) -> nn.Module:
    """The torch net (eval mode, float32, CPU) for one ncnn .param/.bin pair.

    With `cache_dir`, the converted config and state dict are kept there, keyed by the files'
    hash, CONVERTER_VERSION and the torch version, and read back on the next call.
    """
    cached = None
    if cache_dir is not None:
        key = f"{Path(param_path).stem}-{_digest(Path(param_path), Path(bin_path))}-v{CONVERTER_VERSION}"
        cached = Path(cache_dir) / f"{key}-torch{torch.__version__.split('+')[0]}.pt"
        if cached.is_file():
            saved = torch.load(cached, map_location="cpu", weights_only=True)
            return _filled(saved["config"], saved["state"])
    layers = read_model(param_path, bin_path)
    config = _config(layers)
    with torch.device("meta"):   # shapes only: state_from_ncnn checks the weights against them
        shapes = build(config)
    state = state_from_ncnn(layers, shapes)
    net = _filled(config, state)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        torch.save({"config": config, "state": state}, partial)
        partial.replace(cached)
    return net


def run_patch(net: nn.Module, patch: np.ndarray) -> np.ndarray:
    """uint8 RGB [h, w, 3] -> float32 RGB [3, h*s, w*s] in 0..1 (slightly outside at edges), with
    the plain torch net: the contract of model.upscale_tiles' `run`."""
    param = next(net.parameters())
    x = torch.from_numpy(np.array(patch)).to(param.device).permute(2, 0, 1)[None]
    with torch.inference_mode():
        out = net(x.to(param.dtype) / 255.0)
    return out[0].float().cpu().numpy()
