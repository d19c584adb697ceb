"""Click segmentation with Segment Anything (SAM) through transformers: `SamModel` + `SamProcessor`.

Weights are whatever the user registered in the model store with kind "sam" (for example
`facebook/sam-vit-base` from the hub, or a folder saved with save_pretrained): one engine model per
registered SAM, role "interactive" when it is small (ViT-B, ~375 MB), "heavy" otherwise (ViT-L/H).

- Prompts: points (x, y in the picture's pixels, label 1 = this is the object, 0 = this is not) and
  / or one box (x0, y0, x1, y1). They go through `SamProcessor`, which scales them with the image
  to the model's 1024 px input (transformers 5: the image processor alone does not take points).
- The image embedding (the ViT, nearly all the cost) is kept for the last few pictures per loaded
  model, so every click after the first on the same picture runs only the small mask decoder.
- One point gives three candidate masks (SAM's answer to ambiguity: part, object, whole); the one
  with the best predicted IoU is returned. Several points or a box give one mask.
- The mask comes back at the input's size as white (object) on black: the convention inpainting
  uses for "repaint here", so it can go straight to the Generate tab's inpaint mask.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from engine import ModelSpec, UserFacingError
from engine.device_map import DeviceMap, plan as plan_device_map, tensor_shares

log = logging.getLogger(__name__)

MiB = 1024**2
FAMILY = "sam"
INTERACTIVE_MAX_BYTES = 600 * MiB  # sam-vit-base (375 MB) stays resident; large (1.2 GB) / huge (2.5 GB) do not
MAX_PIXELS = 16_000_000  # above this the picture is shrunk for the model and the mask scaled back
MAX_POINTS = 64
EMBEDDINGS_KEPT = 4
HUB_EXAMPLE = "facebook/sam-vit-base"
# Split over GPUs only between these (SamModel lists just the ViT layer): the decoders combine
# their parts' outputs inside their own forward, where no hook moves tensors between devices.
SPLIT_WHOLE = ("SamVisionLayer", "SamPatchEmbeddings", "SamVisionNeck", "SamPromptEncoder", "SamMaskDecoder")

NO_MODEL = (f"No SAM model yet. Add one in the **Models** tab: the hub id `{HUB_EXAMPLE}` (375 MB; "
            "`facebook/sam-vit-large` and `facebook/sam-vit-huge` are bigger and slower) with kind **sam**, or a "
            "local folder with a SAM model's config.json and model.safetensors.")


class SamInputError(UserFacingError, ValueError):
    """Bad prompt or picture that a user can fix; the message says how."""


# ---------------------------------------------------------------------------------- prompts

@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: int = 1  # 1: the object, 0: not the object


def _json(value: Any, problem: str) -> Any:
    """`value`, decoded first when it came as a JSON string (the API takes either)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise SamInputError(f"{problem}: {exc}") from None


def parse_points(points: Any) -> list[Point]:
    """[[x, y], [x, y, label], {"x":, "y":, "label":}, ...] or that as a JSON string; label 1 by default.
    Also accepts {"points": [...]} (what the tab keeps)."""
    if points is None or points == "":
        return []
    points = _json(points, "Points must be JSON like [[x, y, 1], [x, y, 0]]")
    if isinstance(points, dict):
        points = points.get("points", [])
    out = []
    for item in points or []:
        try:
            if isinstance(item, Point):
                out.append(item)
            elif isinstance(item, dict):
                label = item.get("label", 1)
                if isinstance(label, str):
                    label = 0 if label.lower() in ("0", "negative", "background", "remove", "exclude") else 1
                out.append(Point(float(item["x"]), float(item["y"]), int(label)))
            else:
                values = list(item)
                if len(values) not in (2, 3):
                    raise ValueError
                out.append(Point(float(values[0]), float(values[1]), int(values[2]) if len(values) == 3 else 1))
        except (TypeError, ValueError, KeyError):
            raise SamInputError(f"A point is [x, y] or [x, y, label] (label 1 = object, 0 = not), not {item!r}.") from None
    if len(out) > MAX_POINTS:
        raise SamInputError(f"At most {MAX_POINTS} points, not {len(out)}.")
    for p in out:
        if p.label not in (0, 1):
            raise SamInputError(f"A point's label is 1 (object) or 0 (not the object), not {p.label}.")
    return out


def parse_box(box: Any) -> tuple[float, float, float, float] | None:
    """[x0, y0, x1, y1] (any two opposite corners; a JSON string works too), or None."""
    if box is None or box == "" or box == []:
        return None
    box = _json(box, "A box is JSON like [x0, y0, x1, y1]")
    if isinstance(box, dict):
        box = [box.get(k) for k in ("x0", "y0", "x1", "y1")]
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise SamInputError(f"A box is [x0, y0, x1, y1], not {box!r}.") from None
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise SamInputError("The box is empty: give two opposite corners.")
    return x0, y0, x1, y1


def to_rgb(image: Any) -> np.ndarray:
    """An RGB uint8 array from an array (gray, RGB, RGBA), a PIL image or a path."""
    if image is None:
        raise SamInputError("Upload a picture first.")
    if isinstance(image, (str, Path)):
        with Image.open(image) as img:
            image = np.asarray(img.convert("RGB"))
    elif isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise SamInputError(f"The picture must be RGB, not an array of shape {array.shape}.")
    if min(array.shape[:2]) < 8:
        raise SamInputError(f"The picture is too small ({array.shape[1]}x{array.shape[0]}).")
    return np.ascontiguousarray(array[..., :3])


def check_prompt(points: list[Point], box, width: int, height: int) -> None:
    """Something to segment, and all of it inside the picture."""
    if not points and box is None:
        raise SamInputError("Click on the picture (or give points or a box) to say what to segment.")
    for p in points:
        if not (0 <= p.x <= width and 0 <= p.y <= height):
            raise SamInputError(f"Point ({p.x:g}, {p.y:g}) is outside the {width}x{height} picture.")
    if box is not None and (box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height):
        raise SamInputError(f"The box {list(box)} is outside the {width}x{height} picture.")


# ---------------------------------------------------------------------------------- the model

@dataclass
class Segmentation:
    mask: np.ndarray  # bool, (height, width) of the input
    score: float  # SAM's predicted IoU of the chosen mask
    scores: list[float] = field(default_factory=list)  # every candidate's

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def box(self) -> list[int] | None:
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return None
        return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]

    def info(self) -> dict:
        height, width = self.mask.shape
        return {"area": self.area, "area_fraction": round(self.area / float(width * height), 6), "box": self.box(),
                "score": round(self.score, 4), "scores": [round(s, 4) for s in self.scores],
                "width": width, "height": height}


class SamSegmenter:
    """A loaded SAM: model, processor, device, and the embeddings of the last few pictures."""

    def __init__(self, model, processor, device: str, name: str = "sam"):
        # device: where the inputs go; a DeviceMap (a str too) when the model is split over GPUs
        self.model, self.processor, self.device, self.name = model, processor, device, name
        self._embeddings: collections.OrderedDict[str, Any] = collections.OrderedDict()

    @property
    def device_shares(self) -> dict[str, int]:  # weights per device as loaded: the engine accounts a split by it
        return tensor_shares(self.model)

    @property
    def placement(self) -> dict | None:
        """Shown in the System tab when split: where each part is and why."""
        if isinstance(self.device, DeviceMap):
            shares = ", ".join(f"{d} {s / MiB:.0f} MiB" for d, s in self.device_shares.items())
            return {"device": self.device.label, "tier": "split over GPUs", "why": f"fits no single GPU's room: {shares}"}

    @staticmethod
    def _key(image: np.ndarray) -> str:
        return hashlib.sha1(image.tobytes()).hexdigest() + f"{image.shape}"

    def embedding(self, image: np.ndarray, pixel_values):
        import torch

        key = self._key(image)
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        with torch.inference_mode():
            embedding = self.model.get_image_embeddings(pixel_values.to(self.device, self.model.dtype))
        self._embeddings[key] = embedding
        while len(self._embeddings) > EMBEDDINGS_KEPT:
            self._embeddings.popitem(last=False)
        return embedding

    def segment(self, image: Any, points: Any = None, box: Any = None, *,
                max_pixels: int | None = MAX_PIXELS) -> Segmentation:
        """The mask of what the points / box (checked by tabs.segment.check) point at."""
        import torch

        image = to_rgb(image)
        points, box = parse_points(points), parse_box(box)
        height, width = image.shape[:2]
        small, scale = image, 1.0
        if max_pixels and width * height > max_pixels:
            factor = (max_pixels / (width * height)) ** 0.5
            size = (max(1, int(width * factor)), max(1, int(height * factor)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
            scale = size[0] / width
        kwargs: dict[str, Any] = {}
        if points:
            kwargs["input_points"] = [[[[p.x * scale, p.y * scale] for p in points]]]
            kwargs["input_labels"] = [[[p.label for p in points]]]
        if box is not None:
            kwargs["input_boxes"] = [[[v * scale for v in box]]]
        inputs = self.processor(images=small, return_tensors="pt", **kwargs)
        embedding = self.embedding(small, inputs["pixel_values"])
        prompt = {k: inputs[k].to(self.device) for k in ("input_points", "input_labels", "input_boxes") if k in inputs}
        for k in ("input_points", "input_boxes"):
            if k in prompt:
                prompt[k] = prompt[k].to(self.model.dtype)
        # One point is ambiguous (part / object / whole): ask for three masks and keep the best.
        multimask = box is None and len(points) == 1
        with torch.inference_mode():
            out = self.model(image_embeddings=embedding, multimask_output=multimask, **prompt)
        masks = self.processor.post_process_masks(out.pred_masks.float().cpu(), inputs["original_sizes"],
                                                  inputs["reshaped_input_sizes"])[0][0]  # (n masks, H, W) bool
        scores = out.iou_scores[0, 0].float().cpu().tolist()
        best = int(np.argmax(scores))
        mask = masks[best].numpy().astype(bool)
        if mask.shape != (height, width):
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height),
                                                                                Image.Resampling.BILINEAR)) >= 128
        return Segmentation(mask, float(scores[best]), [float(s) for s in scores])


def _processor(path: Path):
    """The folder's SamProcessor; a default one sized from config.json when the folder has none."""
    from transformers import SamProcessor

    names = ("processor_config.json", "preprocessor_config.json")
    if any((path / n).exists() for n in names):
        return SamProcessor.from_pretrained(str(path), local_files_only=True)
    from transformers import SamImageProcessor

    config = json.loads((path / "config.json").read_text())
    side = int((config.get("vision_config") or {}).get("image_size", 1024))
    log.info("%s has no preprocessor_config.json: using SAM's default preprocessing at %d px", path, side)
    return SamProcessor(SamImageProcessor(size={"longest_edge": side}, pad_size={"height": side, "width": side}))


def load(path: str | Path, device: str = "cpu", name: str = "sam") -> SamSegmenter:
    """A SAM folder (config.json + safetensors weights, as save_pretrained or a hub download lays it
    out), loaded without the network and without pickle."""
    from transformers import SamModel

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: add the SAM model again in the Models tab.")
    if isinstance(device, DeviceMap):
        # Each part straight onto its GPU; accelerate's hooks carry activations between them.
        model = SamModel.from_pretrained(str(path), use_safetensors=True, local_files_only=True,
                                         device_map=dict(device.modules)).eval()
    else:
        model = SamModel.from_pretrained(str(path), use_safetensors=True, local_files_only=True)
        model.eval().to(device)
    return SamSegmenter(model, _processor(path), device, name)


def meta_model(path: str | Path):
    """The SAM of a folder's config.json with no weights (the meta device), at the checkpoint's dtype."""
    import torch
    from transformers import SamConfig, SamModel

    config = SamConfig.from_pretrained(str(path), local_files_only=True)
    dtype = getattr(config, "dtype", None)
    with torch.device("meta"):
        model = SamModel(config)
    return model.to(dtype) if isinstance(dtype, torch.dtype) else model


# ---------------------------------------------------------------------------------- engine wiring

class SamLoader:
    """ModelSpec.loader for one registered SAM; `family` lets tabs find SAM specs in the registry."""

    family = FAMILY

    def __init__(self, name: str, path: str):
        self.name, self.path = name, path
        self._meta = None

    def __call__(self, device: str) -> SamSegmenter:
        return load(self.path, device, self.name)

    def split(self, rooms: dict[str, int]) -> DeviceMap | None:
        """ModelSpec.split: the layers over GPUs with these rooms (bytes each), planned from config.json
        on the meta device (no weights read, no GPU touched; built once); None when it does not fit."""
        if self._meta is None:
            self._meta = meta_model(self.path)
        return plan_device_map(self._meta, rooms, no_split=SPLIT_WHOLE, dtype=self._meta.dtype,
                               follow={"vision_encoder.pos_embed": "vision_encoder.patch_embed"})


def model_spec(entry: dict) -> ModelSpec:
    """The engine model for a model-store entry of kind 'sam'."""
    size = int(entry.get("bytes") or 400 * MiB)
    role = "interactive" if size <= INTERACTIVE_MAX_BYTES else "heavy"
    loader = SamLoader(entry["name"], entry["path"])
    return ModelSpec(
        name=entry["name"], role=role, runtime="torch", loader=loader, split=loader.split,
        source=entry.get("source") or entry["path"], estimate_bytes=size,
        # The ViT image encoder at 1024 px dominates a run; learned after the first call.
        run_estimate_bytes=512 * MiB + size, max_pixels=MAX_PIXELS,
        description=f"Segment Anything: click or box to mask ({entry.get('source', entry['path'])})")


def is_sam(spec: ModelSpec) -> bool:
    return getattr(spec.loader, "family", None) == FAMILY


def sam_models(engine) -> list[str]:
    """Names of the SAM models registered in the engine."""
    return [spec.name for spec in engine.registry if is_sam(spec)]


def register_entry(engine, entry: dict) -> ModelSpec | None:
    """Add a store entry's spec to the engine; a second call for the same entry does nothing."""
    if entry["name"] in engine.registry:
        spec = engine.registry.get(entry["name"])
        if is_sam(spec) and spec.loader.path == entry["path"]:
            return spec
        raise UserFacingError(f"The engine already has a model named {entry['name']!r}; "
                              "remove the store entry and add it under another name.")
    spec = model_spec(entry)
    engine.register(spec)
    return spec


def segment(call, name: str, image: Any, points: Any = None, box: Any = None, *,
            max_pixels: int | None = MAX_PIXELS) -> Segmentation:
    """One segmentation with the SAM model `name`, through call(model, fn) (a run's or a job's)."""
    rgb = to_rgb(image)
    return call(name, lambda sam: sam.segment(rgb, points, box, max_pixels=max_pixels))


# ---------------------------------------------------------------------------------- pictures

def mask_image(mask: np.ndarray, grow_px: int = 0) -> np.ndarray:
    """uint8 (H, W): 255 where the object is (inpaint's "repaint here"), 0 elsewhere; grown by
    grow_px pixels on every side (inpainting blends better over a margin)."""
    out = mask.astype(np.uint8) * 255
    grow_px = int(grow_px or 0)
    if grow_px > 0:
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.MaxFilter(2 * min(grow_px, 100) + 1)))
    return out


def overlay(image: np.ndarray, mask: np.ndarray | None, points: list[Point] = (), box=None) -> np.ndarray:
    """The picture with the mask tinted, the points (green: object, red: not) and the box drawn."""
    rgb = to_rgb(image)
    out = rgb.astype(np.float32)
    if mask is not None and mask.any():
        tint = np.array([30, 144, 255], np.float32)
        m = mask.astype(bool)
        out[m] = out[m] * 0.45 + tint * 0.55
    img = Image.fromarray(out.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    radius = max(3, round(min(img.size) / 100))
    if box is not None:
        draw.rectangle(list(box), outline=(255, 200, 0), width=max(2, radius // 2))
    for p in points:
        colour = (40, 220, 60) if p.label == 1 else (230, 40, 40)
        draw.ellipse([p.x - radius, p.y - radius, p.x + radius, p.y + radius], fill=colour, outline=(255, 255, 255),
                     width=max(1, radius // 3))
    return np.asarray(img)
