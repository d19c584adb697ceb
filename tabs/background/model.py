"""Background: find the person in a picture (MediaPipe selfie segmentation) and remove, blur or
replace everything else, in photos and, as a job, in videos.

The model is MediaPipe's selfie segmenter, `selfie_segmentation.tflite` from the mediapipe wheel
(installed with --no-deps for its files only: mediapipe itself is never imported, it pins
numpy<2). Its graph is read from the .tflite file and rebuilt in torch (engine.runtimes.tflite,
MediaPipe's custom op Convolution2DTransposeBias included; selfie_torch.py wraps it), then exported
to ONNX once and run on ONNX Runtime, eager torch where the export fails. tests/test_selfie_torch.py holds
it to LiteRT's outputs (stored). Pre- and post-processing follow the wheel's CPU graph,
selfie_segmentation_cpu.binarypb (decoded by hand, mediapipe's protos being part of mediapipe):

- ImageToTensorCalculator: output 256x256, keep_aspect_ratio false (the image is stretched, not
  letterboxed), output_tensor_float_range [0, 1] (RGB / 255), fed as NHWC float32.
- InferenceCalculator (XNNPACK there; ONNX Runtime or torch here).
- TensorsToSegmentationCalculator: activation NONE; the net's last op is LOGISTIC, so its
  [1, 256, 256, 1] output already is P(person). The mask is resized (bilinear) to the input size.

The wheel also holds selfie_segmentation_landscape.tflite (256x144, fewer FLOPs); MediaPipe's
default is the general model above, and so is ours.
"""
from __future__ import annotations

import functools
import os
import pathlib
import re
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageColor, ImageOps

from engine import Call, JobContext, ModelSpec, UserFacingError
from engine.media.image import read_image
from engine.media.video_job import process_video
from engine.package_files import package_folder
from engine.runtimes.compiled import serve_plan
from engine.runtimes.tflite import small_net_threads

if TYPE_CHECKING:  # torch is imported when the model is loaded, not with the capability
    from .selfie_torch import Segmenter

MiB = 1024**2

SEGMENTER = "selfie-segmenter"

TRANSPARENT, BLUR, COLOR, IMAGE = "transparent", "blur", "color", "image"
MODES = (TRANSPARENT, BLUR, COLOR, IMAGE)
# An H.264 MP4 has no alpha channel: a transparent background means nothing there.
VIDEO_MODES = (BLUR, COLOR, IMAGE)
DEFAULT_COLOR = "#ffffff"

MIN_SIDE = 16  # below this there is no person to find; the net would see a few stretched pixels
# The background blur's Gaussian sigma, as a fraction of the image's long side: strong enough to
# blur a room into colours at any resolution (32 px on a 1280 px frame).
BLUR_FRACTION = 0.025

_MODEL_FILE = "selfie_segmentation.tflite"
_MISSING = ("mediapipe is not installed: run ./setup.sh (it installs mediapipe==0.10.21 with "
            "--no-deps, only for its selfie_segmentation.tflite weights)")
# The ONNX file's name in the compile cache: bump it when the graph's forward changes (the
# weights hash and the torch / onnxruntime versions are in the name already).
EXPORT_KEY = "selfie-segmenter-v1"


class BackgroundInputError(UserFacingError, ValueError):
    """Bad input a user can fix: no or empty image, unknown mode, missing background, bad colour."""


# ---------------------------------------------------------------------------------- loading

def model_path() -> pathlib.Path:
    """selfie_segmentation.tflite inside the installed mediapipe wheel (found, never imported)."""
    return package_folder("mediapipe", "modules/selfie_segmentation", [_MODEL_FILE], _MISSING) / _MODEL_FILE


def unavailable_reason() -> str | None:
    """Why the tab cannot run (None when it can): the weights are missing. torch, which runs the
    net where ONNX Runtime cannot, is a core dependency."""
    try:
        model_path()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def load(device: str = "cpu", accelerate: str | None = "onnx",
         cache_dir: str | os.PathLike | None = None) -> Segmenter:
    """The segmenter on `device` ('cpu' or 'cuda:N'): the torch rebuild of the .tflite graph,
    exported to ONNX and run by ONNX Runtime on that device (accelerate "onnx", the ONNX file
    cached in `cache_dir`, default engine.runtimes.compiled.default_cache_dir()), or eager
    (None / "eager"). A failed export or session logs why and runs eager; `.runtime` says which."""
    from .selfie_torch import load as load_torch

    segmenter = load_torch(device, model_path())
    if accelerate not in (None, "eager"):
        segmenter.accelerate(accelerate, cache_dir, EXPORT_KEY, threads=small_net_threads())
    return segmenter


def prepare(cache_dir: str | os.PathLike | None = None) -> dict:
    """Pay the ONNX export at set-up (tabs/warmup.py) rather than in a first request: about
    5 s on 2 cores, once per machine and torch / onnxruntime versions; a few hundred ms when the
    file is cached. Returns engine.runtimes.compiled.Preparation.as_dict(): mode ("onnx", or
    "eager" with `reason`), prepare_s, path, exported."""
    return load("cpu", "onnx", cache_dir).net.info.as_dict()


def specs() -> list[ModelSpec]:
    plan = serve_plan()
    return [
        ModelSpec(
            name=SEGMENTER, role="interactive", runtime=plan.runtime,
            loader=functools.partial(load, accelerate=plan.mode),
            device=plan.device,
            source="mediapipe 0.10.21 wheel: modules/selfie_segmentation/selfie_segmentation.tflite",
            # Measured on CPU, the ONNX file cached: a load adds 49 MiB RSS (the session, and
            # torch's eager calls that check it); a run adds almost nothing (20 KB), at any image
            # size: the net always sees 256x256, resizing and compositing happen outside the lease.
            estimate_bytes=48 * MiB, run_estimate_bytes=2 * MiB,
            function="person segmentation",
            description="MediaPipe selfie segmentation: P(person) per pixel, 256x256 network"),
    ]


# ---------------------------------------------------------------------------------- inputs

def mode_name(mode: str | None) -> str:
    """' Blur ' -> 'blur': the mode as MODES spells it ('' for none)."""
    return " ".join(str(mode or "").lower().split())


def check_mode(mode: str | None, has_background: bool = False, *, video: bool = False) -> str:
    """The mode, normalised; a BackgroundInputError a user can act on otherwise."""
    name = mode_name(mode)
    if not name:
        raise BackgroundInputError("Choose a mode first.")
    if video and name == TRANSPARENT:
        raise BackgroundInputError("A transparent background needs a video format with an alpha channel, "
                                   "and MP4 (H.264) has none: choose blur, color or image.")
    allowed = VIDEO_MODES if video else MODES
    if name not in allowed:
        raise BackgroundInputError(f"Unknown mode {mode!r}: use one of {', '.join(allowed)}.")
    if name == IMAGE and not has_background:
        raise BackgroundInputError("Mode 'image' needs a background image.")
    return name


_RGBA_FLOATS = re.compile(r"rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)")


def parse_color(color: str | tuple | list | None) -> tuple[int, int, int]:
    """An (r, g, b) from '#fff', '#ffffff', 'white', 'rgb(...)', 'rgba(...)' (float parts, as
    some colour pickers send them) or a sequence of three numbers; None gives white."""
    if color is None or (isinstance(color, str) and not color.strip()):
        color = DEFAULT_COLOR
    if isinstance(color, str):
        text = color.strip()
        match = _RGBA_FLOATS.fullmatch(text.lower())
        if match:
            values = [float(v) for v in match.groups()]
        else:
            try:
                values = list(ImageColor.getrgb(text)[:3])
            except ValueError:
                raise BackgroundInputError(f"{color!r} is not a colour: use a hex code like #00ff00.") from None
    else:
        values = list(color)[:3]
        if len(values) != 3:
            raise BackgroundInputError(f"{color!r} is not a colour: give red, green and blue.")
    try:
        rgb = tuple(int(round(float(v))) for v in values)
    except (TypeError, ValueError):
        raise BackgroundInputError(f"{color!r} is not a colour: give red, green and blue.") from None
    if not all(0 <= v <= 255 for v in rgb):
        raise BackgroundInputError(f"{color!r} is not a colour: each part must be 0 to 255.")
    return rgb  # type: ignore[return-value]


def hex_color(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def split_alpha(image: np.ndarray | None, what: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB uint8, alpha or None) of a gray, RGB or RGBA picture; transparent parts on white."""
    if image is None:
        raise BackgroundInputError(f"Upload an {what} first." if what[0] in "aeiou" else f"Upload a {what} first.")
    image = np.asarray(image)
    if image.size == 0 or image.ndim < 2 or 0 in image.shape[:2]:
        raise BackgroundInputError(f"The {what} is empty.")
    if image.dtype != np.uint8:
        raise BackgroundInputError(f"The {what} must have 8-bit colours (uint8), not {image.dtype}.")
    if image.ndim == 3 and image.shape[2] in (1, 2):  # gray, or gray + alpha
        image = np.concatenate([np.repeat(image[..., :1], 3, axis=2), image[..., 1:]], axis=2)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise BackgroundInputError(f"The {what} must be a gray, RGB or RGBA picture, not an array of "
                                   f"shape {image.shape}.")
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise BackgroundInputError(f"The {what} is too small ({width}x{height}); both sides need at "
                                   f"least {MIN_SIDE} px.")
    if image.shape[2] == 3:
        return np.ascontiguousarray(image), None
    alpha = np.ascontiguousarray(image[..., 3])
    return _blend(image[..., :3], (255, 255, 255), alpha), alpha


# ---------------------------------------------------------------------------------- the mask

def model_input(rgb: np.ndarray, height: int = 256, width: int = 256) -> np.ndarray:
    """(height, width, 3) float32 in [0, 1]: the picture stretched to the net's input, as
    MediaPipe's ImageToTensorCalculator does (keep_aspect_ratio false, range [0, 1])."""
    # reducing_gap: a big frame is first box-reduced by an integer factor, then resized: about
    # twice as fast on a 720p frame, within half a level of the one-step resize.
    small = Image.fromarray(rgb).resize((width, height), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(small, dtype=np.float32) / 255.0


def upsample_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """The model's P(person) as an 8-bit alpha (255 = person) at (height, width), resized
    bilinearly as MediaPipe does: edges stay soft, a ramp of a few pixels at any size."""
    alpha = Image.fromarray((np.clip(mask, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    if alpha.size != (width, height):
        alpha = alpha.resize((width, height), Image.BILINEAR)
    return np.asarray(alpha)


def person_mask(segmenter: Segmenter, image: np.ndarray) -> np.ndarray:
    """The person's mask of a picture, (H, W) uint8, 255 = person (preprocessing included; the
    engine paths keep the resizing outside the model's lease)."""
    rgb, _ = split_alpha(image)
    small = segmenter(model_input(rgb, segmenter.height, segmenter.width))
    return upsample_mask(small, *rgb.shape[:2])


# ---------------------------------------------------------------------------------- compositing

def _blend(fg: np.ndarray, bg: np.ndarray | tuple, mask: np.ndarray) -> np.ndarray:
    """fg where the 8-bit mask is 255, bg where it is 0, mixed in between: uint8 (H, W, 3).
    `bg` is a picture of fg's size or an (r, g, b) colour. Exact at 0 and 255."""
    front = Image.fromarray(np.ascontiguousarray(fg))
    if isinstance(bg, np.ndarray):
        back = Image.fromarray(np.ascontiguousarray(bg))
    else:
        back = Image.new("RGB", front.size, tuple(int(v) for v in bg))
    return np.asarray(Image.composite(front, back, Image.fromarray(np.ascontiguousarray(mask))))


def _box_blur(a: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Mean over 2 * radius + 1 samples along `axis`, edges extended (a cumulative sum)."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (radius + 1, radius)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return ((hi - lo) / (2 * radius + 1)).astype(np.float32)


def _gaussian(a: np.ndarray, radius: int) -> np.ndarray:
    """Three box blurs each way: close to a Gaussian of sigma ~ radius."""
    for _ in range(3):
        a = _box_blur(_box_blur(a, radius, 0), radius, 1)
    return a


def blurred_background(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The scene behind the person, blurred: uint8 (H, W, 3).

    A blur this strong needs no full resolution: it runs on a copy shrunk so that its sigma is
    ~3 px, and the result is scaled back. The person is left out of the average (each pixel is
    weighted by 1 - mask and the weights are divided out), so no halo of their colours bleeds
    into the background around them; where only the person is near, the plain blur fills in.
    """
    height, width = rgb.shape[:2]
    sigma = max(1.0, BLUR_FRACTION * max(height, width))
    factor = max(1.0, sigma / 3.0)
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    radius = max(1, round(sigma / factor))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.BOX), dtype=np.float32)
    weight = np.asarray(Image.fromarray(255 - mask).resize(size, Image.BOX), dtype=np.float32)[..., None] / 255.0
    eps = 0.05  # below this much background nearby, the plain blur takes over smoothly
    plain = _gaussian(small, radius)
    behind = (_gaussian(small * weight, radius) + eps * plain) / (_gaussian(weight, radius) + eps)
    behind = np.clip(behind + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(behind).resize((width, height), Image.BILINEAR))


def fit_background(background: np.ndarray, height: int, width: int) -> np.ndarray:
    """A background picture scaled to cover (height, width) and cropped at its centre."""
    rgb, _ = split_alpha(background, "background image")
    return np.asarray(ImageOps.fit(Image.fromarray(rgb), (width, height), Image.LANCZOS))


def composite(image: np.ndarray, mask: np.ndarray, mode: str, *, color=DEFAULT_COLOR,
              background: np.ndarray | None = None) -> np.ndarray:
    """The picture with its background removed or replaced, by an 8-bit mask of its size.

    transparent: RGBA, the mask (times any alpha the picture had) as alpha.
    blur: RGB, the background blurred.  color: RGB, the background one colour (default white).
    image: RGB, the background replaced by `background`, scaled to cover and centre-cropped.
    """
    mode = mode_name(mode)
    rgb, alpha = split_alpha(image)
    if mask.shape != rgb.shape[:2] or mask.dtype != np.uint8:
        raise ValueError(f"the mask is {mask.dtype} {mask.shape}, want uint8 {rgb.shape[:2]}")
    if mode == TRANSPARENT:
        if alpha is not None:
            mask = ((mask.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
        return np.dstack([rgb, mask])
    if mode == BLUR:
        behind = blurred_background(rgb, mask)
    elif mode == COLOR:
        behind = parse_color(color)
    elif mode == IMAGE:
        behind = fit_background(background, *rgb.shape[:2])
    else:   # tabs.background.check refuses it before; reaching here is a caller's bug
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return _blend(rgb, behind, mask)


def remove_background(segmenter: Segmenter, image: np.ndarray, mode: str, *, color=DEFAULT_COLOR,
                      background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(result, mask): the composite of `composite` and the 8-bit person mask."""
    mask = person_mask(segmenter, image)
    return composite(image, mask, mode, color=color, background=background), mask


def segment(call: Call, image: np.ndarray) -> np.ndarray:
    """The 8-bit person mask, the segmenter leased through `call`. Only the net runs inside the
    lease: shrinking the picture and scaling the mask back happen outside it."""
    rgb, _ = split_alpha(image)
    x = model_input(rgb)
    return upsample_mask(call(SEGMENTER, lambda segmenter: segmenter(x)), *rgb.shape[:2])


# ---------------------------------------------------------------------------------- video

def read_background(path: str | os.PathLike) -> np.ndarray:
    """A background picture from a file, upright and RGB; a UserFacingError when it is none
    (read_image: a pixel cap, any colour mode, a plain ImageError)."""
    rgb, _ = split_alpha(read_image(path, "background image", "RGBA"), "background image")
    return rgb


def video_job(ctx: JobContext) -> str:
    """Job kind remove_background_video: params mode (blur, color, image), color, chunk_frames;
    inputs 'video' and, for mode 'image', 'background'.

    Every frame is segmented and composited on its own, with no state carried between frames, so
    a job resumed from its first unfinished chunk produces exactly the frames an uninterrupted
    run would. The background picture is read from the job's copy of it at every (re)start.
    The request was checked at submit (tabs.background.check).
    """
    mode = mode_name(ctx.params.get("mode", BLUR))
    color = parse_color(ctx.params.get("color", DEFAULT_COLOR))
    picture = read_background(ctx.input("background")) if mode == IMAGE else None
    fitted: dict[tuple[int, int], np.ndarray] = {}  # the picture at the frame size, made once

    def transform(frames: np.ndarray) -> np.ndarray:
        height, width = frames.shape[1:3]
        inputs = [model_input(frame) for frame in frames]
        # One lease per chunk, for the net alone: interactive calls get the model between chunks.
        small = ctx.call(SEGMENTER, lambda segmenter: [segmenter(x) for x in inputs])
        out = np.empty_like(frames)
        for i, (frame, mask) in enumerate(zip(frames, small)):
            mask = upsample_mask(mask, height, width)
            if mode == BLUR:
                behind = blurred_background(frame, mask)
            elif mode == COLOR:
                behind = color
            else:
                if (height, width) not in fitted:
                    fitted[(height, width)] = fit_background(picture, height, width)
                behind = fitted[(height, width)]
            out[i] = _blend(frame, behind, mask)
        return out

    return str(process_video(ctx, ctx.input("video"), transform))
