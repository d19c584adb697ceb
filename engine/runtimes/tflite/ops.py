"""TensorFlow Lite's operators in torch, where TFLite defines them differently from torch.

Activations inside the graph (graph.py) run NCHW when they have rank 4 and in their own layout
otherwise; the functions here take and give that layout. Each one says which reference it
transcribes: TFLite's kernels (tensorflow/lite/kernels/*.cc, internal/reference/*.h) and
MediaPipe's custom operators (mediapipe/util/tflite/operations/*.cc). Everything is written with
tensor operations only (no .item(), no numpy at run time) so that the graph exports to ONNX.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# NHWC axis -> NCHW axis, for the ops with an axis argument on 4-D activations.
AXIS_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}


class UnsupportedGraph(NotImplementedError):
    """The .tflite graph uses an operator or option this executor does not implement."""


def to_nhwc(x: torch.Tensor) -> torch.Tensor:
    """The TFLite (NHWC) view of an activation: 4-D ones are held NCHW inside the graph."""
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def from_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "NONE":
        return lambda x: x
    if name == "RELU":
        return torch.relu
    if name == "RELU6":
        return lambda x: torch.clamp(x, 0.0, 6.0)
    if name == "RELU_N1_TO_1":
        return lambda x: torch.clamp(x, -1.0, 1.0)
    if name == "TANH":
        return torch.tanh
    raise UnsupportedGraph(f"fused activation {name}")


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite's SAME padding of one axis (kernels/padding.h): (before, after), the odd pixel after."""
    out = (size + stride - 1) // stride
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def pad_for(x: torch.Tensor, padding: str, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int] = (1, 1)) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) for an NCHW input; zeros for VALID."""
    if padding == "VALID":
        return (0, 0, 0, 0)
    if padding != "SAME":
        raise UnsupportedGraph(f"padding {padding}")
    top, bottom = same_padding(x.shape[2], kernel[0], stride[0], dilation[0])
    left, right = same_padding(x.shape[3], kernel[1], stride[1], dilation[1])
    return (left, right, top, bottom)


def conv(x, weight, bias, padding, stride, dilation, groups):
    left, right, top, bottom = pad_for(x, padding, weight.shape[2:], stride, dilation)
    if left == right and top == bottom:
        return F.conv2d(x, weight, bias, stride, (top, left), dilation, groups)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride, 0, dilation, groups)


def pool(x, options: dict, maximum: bool):
    o = options
    kernel, stride = (o["filter_height"], o["filter_width"]), (o["stride_h"], o["stride_w"])
    pads = pad_for(x, o["padding"], kernel, stride)
    if maximum:
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")) if any(pads) else x, kernel, stride)
    if not any(pads):
        return F.avg_pool2d(x, kernel, stride)
    # TFLite divides by the pixels inside the image only: sum over the window / that count.
    total = F.avg_pool2d(F.pad(x, pads), kernel, stride, divisor_override=1)
    ones = F.pad(torch.ones_like(x[:1, :1]), pads)
    return total / F.avg_pool2d(ones, kernel, stride, divisor_override=1)


def _source_coordinates(out_size: int, in_size: int, align_corners: bool, half_pixel: bool, device):
    """Per output index along one axis: (low index, high index, weight of high), as TFLite's
    reference resize_bilinear computes them."""
    if align_corners and out_size > 1:
        scale = (in_size - 1) / (out_size - 1)
    else:
        scale = in_size / out_size
    pos = torch.arange(out_size, dtype=torch.float32, device=device)
    src = (pos + 0.5) * scale - 0.5 if half_pixel else pos * scale
    low = torch.floor(src)
    frac = src - low
    low_i = low.to(torch.int64)
    high = torch.clamp(low_i + 1, max=in_size - 1)  # ceil(src) where src is not whole
    high = torch.where(frac > 0, high, torch.clamp(low_i, 0, in_size - 1))
    return torch.clamp(low_i, 0, in_size - 1), high, frac


def resize_bilinear(x, size: tuple[int, int], align_corners: bool, half_pixel: bool):
    """TFLite's RESIZE_BILINEAR. Half-pixel centres and aligned corners are torch's own two
    modes (the same sampling, edges clamped alike): its fast kernel. TFLite's legacy mode (neither
    flag: source = out * in / out, no offset) has none in torch and is gathered by hand."""
    if half_pixel or align_corners:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    height, width = size
    y0, y1, fy = _source_coordinates(height, x.shape[2], align_corners, half_pixel, x.device)
    x0, x1, fx = _source_coordinates(width, x.shape[3], align_corners, half_pixel, x.device)
    fy, fx = fy.view(1, 1, -1, 1), fx.view(1, 1, 1, -1)
    top, bottom = x[:, :, y0], x[:, :, y1]
    top = top[..., x0] * (1 - fx) + top[..., x1] * fx
    bottom = bottom[..., x0] * (1 - fx) + bottom[..., x1] * fx
    return top * (1 - fy) + bottom * fy


def transpose_conv(x, weight, bias, same: bool, stride: tuple[int, int]):
    """TFLite / MediaPipe transposed convolution: weight (in, out, kH, kW) for torch, output
    cropped from the full one: SAME pads max(0, k - (in - 1) % s - 1) per axis, half before."""
    full = F.conv_transpose2d(x, weight, bias, stride)
    crops = []
    for axis, s in zip((2, 3), stride):
        k, size = weight.shape[axis], x.shape[axis]
        total = max(0, k - (size - 1) % s - 1) if same else 0
        crops.append((total // 2, s * (size - 1) + k - total))
    (top, h), (left, w) = crops
    return full[:, :, top:top + h, left:left + w]


def depth_to_space(x, block: int):
    """TFLite's DEPTH_TO_SPACE on NCHW: output (h * b + i, w * b + j, c) reads input channel
    (i * b + j) * C + c (reference_ops.h, TensorFlow's DCR order; torch's pixel_shuffle is CRD)."""
    n, channels, height, width = x.shape
    out = channels // (block * block)
    y = x.reshape(n, block, block, out, height, width).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, out, height * block, width * block)


def strided_slice(x, begin, end, strides, options: dict):
    """STRIDED_SLICE on the NHWC view (kernels/strided_slice.cc): masked starts and ends run to
    the edge, shrunk axes are indexed, `offset` makes end relative to begin; Python's slice
    clamping is TFLite's. Negative strides, ellipsis and new axes are not supported."""
    o = options
    if o["ellipsis_mask"] or o["new_axis_mask"] or any(s <= 0 for s in strides):
        raise UnsupportedGraph(f"STRIDED_SLICE with {o} and strides {strides}")
    index = []
    for axis, (b, e, s) in enumerate(zip(begin, end, strides)):
        if o["shrink_axis_mask"] >> axis & 1:
            index.append(int(b))
            continue
        start = None if o["begin_mask"] >> axis & 1 else int(b)
        stop = None if o["end_mask"] >> axis & 1 else int(b + e if o["offset"] else e)
        index.append(slice(start, stop, int(s)))
    return from_nhwc(to_nhwc(x)[tuple(index)])


def pad(x, paddings, value: float = 0.0):
    """PAD / PADV2: paddings (rank, 2) in TFLite's axis order."""
    rows = [tuple(int(v) for v in row) for row in paddings]
    if x.dim() == 4:  # NCHW: F.pad lists the last axis first
        order = [2, 1, 3, 0]
    else:
        order = list(range(x.dim() - 1, -1, -1))
    flat = [v for axis in order for v in rows[axis]]
    if not any(flat):
        return x
    return F.pad(x, flat, value=value)


# ------------------------------------------------------------------ MediaPipe's custom ops

def landmarks_to_transform_matrix(landmarks, options: dict):
    """MediaPipe's Landmarks2TransformMatrix, version 2 (landmarks_to_transform_matrix.cc):
    from (B, N, 3) landmarks, the (B, 4, 4) matrix that maps an output_width x output_height
    crop (rotated so that the two rotation landmarks are level, sized by scale_x/y times the
    subset's extent, centred on it) back to the landmarks' coordinates."""
    idx = [int(i) for i in options["subset_idxs"]]
    left, right = landmarks[:, options["left_rotation_idx"]], landmarks[:, options["right_rotation_idx"]]
    rotation = float(options.get("target_rotation_radians", 0.0)) - torch.atan2(
        right[:, 1] - left[:, 1], right[:, 0] - left[:, 0])
    points = landmarks[:, idx, :2]
    cos, sin = torch.cos(rotation)[:, None], torch.sin(rotation)[:, None]
    rx = cos * points[..., 0] - sin * points[..., 1]
    ry = sin * points[..., 0] + cos * points[..., 1]
    x_max, x_min, y_max, y_min = rx.amax(1), rx.amin(1), ry.amax(1), ry.amin(1)
    mx, my = (x_min + x_max) / 2, (y_min + y_max) / 2
    c, s = torch.cos(-rotation), torch.sin(-rotation)  # the inverse rotation, back to the input
    centre_x, centre_y = c * mx - s * my, s * mx + c * my
    sx = options["scale_x"] * (x_max - x_min) / options["output_width"]
    sy = options["scale_y"] * (y_max - y_min) / options["output_height"]
    # shift(centre) * rotate(-rotation) * scale(sx, sy) * shift(-output size / 2)
    a, b, d, e = c * sx, -s * sy, s * sx, c * sy
    half_w, half_h = options["output_width"] / 2.0, options["output_height"] / 2.0
    tx = centre_x - a * half_w - b * half_h
    ty = centre_y - d * half_w - e * half_h
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = [a, b, zero, tx, d, e, zero, ty, zero, zero, one, zero, zero, zero, zero, one]
    return torch.stack(rows, dim=1).reshape(-1, 4, 4)


def transform_tensor_bilinear(x, matrix, height: int, width: int):
    """MediaPipe's TransformTensorBilinear, version 2 (transform_tensor_bilinear.cc), on NCHW:
    output pixel (x, y) samples the input at rows 0-1 of `matrix` applied to (x + 0.5, y + 0.5)
    minus 0.5, bilinearly; a sample outside [0, size - 1] gives 0, a corner outside reads 0."""
    n, channels, in_h, in_w = x.shape
    m = matrix.reshape(-1, 16)
    ox = torch.arange(width, dtype=x.dtype, device=x.device).view(1, 1, -1)
    oy = torch.arange(height, dtype=x.dtype, device=x.device).view(1, -1, 1)
    # The kernel's align-corners correction folded into the translation, as it does.
    shift_x = m[:, 3] + m[:, 0] * 0.5 + m[:, 1] * 0.5 - 0.5
    shift_y = m[:, 7] + m[:, 4] * 0.5 + m[:, 5] * 0.5 - 0.5
    tx = m[:, 0].view(-1, 1, 1) * ox + m[:, 1].view(-1, 1, 1) * oy + shift_x.view(-1, 1, 1)
    ty = m[:, 4].view(-1, 1, 1) * ox + m[:, 5].view(-1, 1, 1) * oy + shift_y.view(-1, 1, 1)
    inside = (tx >= 0) & (tx <= in_w - 1) & (ty >= 0) & (ty <= in_h - 1)
    x0, y0 = torch.floor(tx), torch.floor(ty)
    fx, fy = tx - x0, ty - y0
    flat = x.reshape(n, channels, in_h * in_w)

    # Integer corners, clamped as integers (a float clamp before the cast exports to a broken
    # ONNX graph with torch 2.13's exporter); the masks zero what lies outside.
    iy, ix = y0.to(torch.int64), x0.to(torch.int64)

    def read(yy, xx):
        valid = (yy >= 0) & (xx >= 0) & (yy <= in_h - 1) & (xx <= in_w - 1) & inside
        index = torch.clamp(yy, 0, in_h - 1) * in_w + torch.clamp(xx, 0, in_w - 1)
        values = flat.gather(2, index.reshape(n, 1, -1).expand(n, channels, -1))
        return values * valid.reshape(n, 1, -1).to(x.dtype)

    q11, q21 = read(iy, ix), read(iy, ix + 1)
    q12, q22 = read(iy + 1, ix), read(iy + 1, ix + 1)
    fx, fy = fx.reshape(n, 1, -1), fy.reshape(n, 1, -1)
    upper = (1 - fx) * q11 + fx * q21
    lower = (1 - fx) * q12 + fx * q22
    return (fy * lower + (1 - fy) * upper).reshape(n, channels, height, width)


def transform_landmarks(landmarks, matrix):
    """MediaPipe's TransformLandmarks, version 2 (transform_landmarks.cc): (B, N, 2 or 3)
    landmarks, x and y mapped by rows 0-1 of the 4x4 matrix (as (x, y, 0, 1)), z kept."""
    m = matrix.reshape(-1, 1, 16)
    x, y = landmarks[..., 0], landmarks[..., 1]
    out_x = m[..., 0] * x + m[..., 1] * y + m[..., 3]
    out_y = m[..., 4] * x + m[..., 5] * y + m[..., 7]
    return torch.cat([out_x[..., None], out_y[..., None], landmarks[..., 2:]], dim=-1)
