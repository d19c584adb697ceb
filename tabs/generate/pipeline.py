"""Stable Diffusion family (1.x, 2.x, XL, turbo) through diffusers: txt2img, img2img, inpaint.

Weights come from a local diffusers folder (save_pretrained layout, as a hub download is laid
out) or from one original-layout `.safetensors` checkpoint (`from_single_file`). Only safetensors
are read: folders load with `use_safetensors=True` (no pickle fallback), `.ckpt`/`.bin`/`.pt`
single files are refused. Loading never touches the network: a single file needs its family's
diffusers configs (model_index.json, tokenizer, scheduler, component configs) either as a local
folder (`config=`) or already in the hub cache; otherwise the error says what to download.

- `DiffusionModel` is a registry entry (the model manager fills these; a path works today).
  `register(engine, model)` adds its ModelSpec (role "heavy", runtime "torch") and its batch job kind.
- The loader picks a memory tier (engine.memory_tiers) from the file headers' exact tensor sizes and
  the device's free memory and budget, loads on the CPU, then places the pipeline for that tier.
  img2img and inpaint pipelines are made with `from_pipe`: they share the modules, no second copy.
- `generate(run, name, mode, request, ...)` runs one call with OOM recovery: an OOM moves the
  model one tier down and retries; the tier lands on the run record.
- Seeds: image i of a batch uses seed + i with its own CPU torch.Generator, so every image can be
  made again alone, and a seed gives the same starting noise on CPU and GPU (diffusers'
  recommendation for reproducible pipelines; the noise is moved to the device).
- Every image carries its parameters in a PNG `parameters` text chunk, A1111's format.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import random
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, PngImagePlugin

from engine import JobContext, JobKind, ModelSpec, UserFacingError
from engine.files import atomic_write
from tabs.generate import tiers as mt

log = logging.getLogger(__name__)

MiB = 1024**2
FAMILY = "diffusion"
MODES = ("txt2img", "img2img", "inpaint")
MAX_SIDE = 2048
MAX_STEPS = 150
MAX_BATCH = 8
MAX_COUNT = 500  # images in one batch job
SEED_MAX = 2**32 - 1
BATCH_PREFIX = "generate_batch:"

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOATS = ("F64", "F32", "F16", "BF16")
_PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")


class DiffusionInputError(UserFacingError, ValueError):
    """Bad request a user can fix (empty prompt, size, steps, missing image). The message says how."""


class DiffusionSetupError(RuntimeError):
    """The model's files are missing or unusable; the message says what to download or fix."""


# ---------------------------------------------------------------------------------- registry entries

@dataclass(frozen=True)
class DiffusionModel:
    """One Stable Diffusion family model as the model manager registers it."""

    name: str  # the engine's model name
    path: str  # diffusers folder (save_pretrained layout) or a single .safetensors file
    config: str | None = None  # single file: folder with the family's diffusers configs
    turbo: bool | None = None  # distilled (1-4 steps, no guidance); None: from the name
    description: str = ""

    @property
    def single_file(self) -> bool:
        return Path(self.path).is_file()

    @property
    def is_turbo(self) -> bool:
        if self.turbo is not None:
            return self.turbo
        return "turbo" in f"{self.name} {Path(self.path).name}".lower() or "lcm" in self.name.lower()


@dataclass(frozen=True)
class Request:
    """One generation call. seed -1 picks a random seed (recorded in the images)."""

    prompt: str
    negative_prompt: str = ""
    steps: int = 25
    guidance: float = 7.0
    width: int | None = None  # None: the model's native size (txt2img) or the input's (img2img)
    height: int | None = None
    seed: int = -1
    batch: int = 1
    strength: float = 0.75  # img2img / inpaint: how much of the input is repainted (1 = all)

    def resolved(self) -> "Request":
        """The same request with a concrete seed."""
        if self.seed is None or int(self.seed) < 0:
            return dataclasses.replace(self, seed=random.randint(0, SEED_MAX - MAX_COUNT))
        return self


# ---------------------------------------------------------------------------------- files

def safetensors_header(path: str | os.PathLike) -> dict[str, dict]:
    """Tensor names -> {dtype, shape, data_offsets}, read from the file's JSON header only."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise DiffusionSetupError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * MiB:
            raise DiffusionSetupError(f"{path} is not a safetensors file (header of {length} bytes)")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def _tensor_bytes(info: dict, dtype_bytes: int) -> int:
    numel = int(np.prod(info["shape"])) if info["shape"] else 1
    size = dtype_bytes if info["dtype"] in _FLOATS else _DTYPE_BYTES.get(info["dtype"], 4)
    return numel * size


def _weights_files(folder: Path, variant: str | None) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if variant:
        chosen = [f for f in files if f".{variant}." in f.name]
    else:
        chosen = [f for f in files if not re.search(r"\.(fp16|bf16|fp32)\.", f.name)]
    return chosen or files


def _model_index(folder: Path) -> dict:
    path = folder / "model_index.json"
    if not path.exists():
        raise DiffusionSetupError(
            f"{folder} is not a diffusers model folder (no model_index.json). Add the model through the "
            "Models tab, or point at a folder saved with save_pretrained (model_index.json, unet/, vae/, "
            "text_encoder/, tokenizer/, scheduler/).")
    return json.loads(path.read_text())


def _components(index: dict) -> list[str]:
    return [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0]]


def folder_variant(folder: Path, dtype_bytes: int) -> str | None:
    """'fp16' when the folder has fp16 variant files and we run in 16 bits (or it has nothing else)."""
    files = [f.name for f in folder.rglob("*.safetensors")]
    has_fp16 = any(".fp16." in f for f in files)
    has_plain = any(not re.search(r"\.(fp16|bf16|fp32)\.", f) for f in files)
    return "fp16" if has_fp16 and (dtype_bytes == 2 or not has_plain) else None


# LDM single-file prefixes -> diffusers components (for sizes; the conversion itself is diffusers')
_LDM_PREFIXES = (("model.diffusion_model.", "unet"), ("first_stage_model.", "vae"), ("vae.", "vae"),
                 ("cond_stage_model.", "text_encoder"), ("conditioner.embedders.0.", "text_encoder"),
                 ("conditioner.embedders.1.", "text_encoder_2"))


def _ldm_group_name(component: str, name: str) -> str:
    """LDM names renamed just enough that block groups match diffusers' (layers_per_block 2)."""
    parts = name.split(".")
    if component == "unet" and len(parts) > 1 and parts[1].isdigit():
        k = int(parts[1])
        if parts[0] == "input_blocks" and k > 0:
            return f"down_blocks.{(k - 1) // 3}.{name}"
        if parts[0] == "output_blocks":
            return f"up_blocks.{k // 3}.{name}"
    if component == "vae" and len(parts) > 2 and parts[1] in ("down", "up") and parts[2].isdigit():
        return f"{parts[0]}.{parts[1]}_blocks.{parts[2]}.{name}"
    return name


def component_tensors(model: DiffusionModel, dtype_bytes: int) -> dict[str, dict[str, int]]:
    """{component: {tensor: bytes at the run dtype}} from the safetensors headers (no weights read)."""
    path = Path(model.path)
    out: dict[str, dict[str, int]] = {}
    if path.is_file():
        for name, info in safetensors_header(path).items():
            for prefix, component in _LDM_PREFIXES:
                if name.startswith(prefix):
                    key = _ldm_group_name(component, name[len(prefix):])
                    out.setdefault(component, {})[key] = _tensor_bytes(info, dtype_bytes)
                    break
        return out
    index = _model_index(path)
    variant = folder_variant(path, dtype_bytes)
    for component in _components(index):
        folder = path / component
        if not folder.is_dir():
            continue
        tensors: dict[str, int] = {}
        for file in _weights_files(folder, variant):
            for name, info in safetensors_header(file).items():
                tensors[name] = _tensor_bytes(info, dtype_bytes)
        if tensors:
            out[component] = tensors
    return out


def pipeline_size(model: DiffusionModel, dtype_bytes: int) -> mt.PipelineSize:
    return mt.PipelineSize.from_tensors(component_tensors(model, dtype_bytes))


class _Shape:
    def __init__(self, shape):
        self.shape = tuple(shape)


def single_file_type(path: str | os.PathLike) -> str:
    """diffusers' model type of an original-layout checkpoint ('v1', 'v2', 'xl_base', 'inpainting', ...)."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    lazy = {k: _Shape(v["shape"]) for k, v in safetensors_header(path).items()}
    return infer_diffusers_model_type(lazy)


_SINGLE_FILE_CLASSES = {
    "v1": "StableDiffusionPipeline", "v2": "StableDiffusionPipeline",
    "inpainting": "StableDiffusionInpaintPipeline", "inpainting_v2": "StableDiffusionInpaintPipeline",
    "xl_base": "StableDiffusionXLPipeline", "xl_inpaint": "StableDiffusionXLInpaintPipeline",
    "playground-v2-5": "StableDiffusionXLPipeline",
}


def _config_folder(model: DiffusionModel, model_type: str) -> str:
    """The diffusers configs a single file needs: the entry's `config`, or its family's repo in the
    hub cache. Never downloads: the model manager does that."""
    if model.config:
        if not (Path(model.config) / "model_index.json").exists():
            raise DiffusionSetupError(f"{model.name}: the config folder {model.config} has no model_index.json")
        return model.config
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS
    from huggingface_hub import snapshot_download

    repo = DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type]["pretrained_model_name_or_path"]
    try:
        return snapshot_download(repo, allow_patterns=["*.json", "*.txt"], local_files_only=True)
    except Exception as exc:
        raise DiffusionSetupError(
            f"{model.name} is a single-file {model_type} checkpoint; loading it needs the diffusers "
            f"configs of {repo} (a few small .json/.txt files, no weights). Add {repo} in the Models tab, "
            f"or run: hf download {repo} --include '*.json' '*.txt'  (or set the model's config folder). "
            f"({type(exc).__name__})") from None


# ---------------------------------------------------------------------------------- loading

def run_dtype(device: str):
    import torch

    return torch.float16 if mt.is_accelerator(device) else torch.float32


def load_pipeline(model: DiffusionModel, dtype=None):
    """The model's base pipeline on the CPU (txt2img, or inpaint for inpainting checkpoints)."""
    import diffusers
    import torch

    dtype = dtype or torch.float32
    path = Path(model.path)
    if not path.exists():
        raise DiffusionSetupError(f"{model.name}: {path} does not exist. Add the model again in the Models tab.")
    if path.is_file():
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            raise DiffusionSetupError(
                f"{path.name} is a pickle checkpoint, which can run code when loaded: Wimmel reads only "
                ".safetensors. Download the model's .safetensors file instead.")
        if path.suffix.lower() != ".safetensors":
            raise DiffusionSetupError(f"{path.name}: a single-file model must be a .safetensors checkpoint")
        model_type = single_file_type(path)
        cls_name = _SINGLE_FILE_CLASSES.get(model_type)
        if cls_name is None:
            raise DiffusionSetupError(f"{path.name} looks like a {model_type} checkpoint, which is not a "
                                      "Stable Diffusion 1.x/2.x/XL model this tab runs")
        cls = getattr(diffusers, cls_name)
        kwargs = {"safety_checker": None, "requires_safety_checker": False} if "XL" not in cls_name else {}
        pipe = cls.from_single_file(str(path), config=_config_folder(model, model_type), local_files_only=True,
                                    dtype=dtype, **kwargs)
    else:
        index = _model_index(path)
        kwargs = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
        variant = folder_variant(path, torch.finfo(dtype).bits // 8)
        try:
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                str(path), dtype=dtype, use_safetensors=True, variant=variant, local_files_only=True,
                **kwargs)
        except EnvironmentError as exc:
            if "safetensors" in str(exc).lower():
                raise DiffusionSetupError(
                    f"{model.name}: {path} has no .safetensors weights for every component; pickle "
                    "weights (.bin/.ckpt) are not loaded. Download the safetensors files.") from exc
            raise
    pipe.set_progress_bar_config(disable=True)
    return pipe


class DiffusionPipe:
    """A loaded model: its pipelines per mode (sharing modules), its tier, and generation."""

    def __init__(self, model: DiffusionModel, base: Any, device: str, tier: mt.Tier,
                 size: mt.PipelineSize, group_stream: bool = False):
        import diffusers

        self.model, self.device, self.size = model, device, size
        self.base = base
        self.group_stream = group_stream
        self.pipes: dict[str, Any] = {}
        unet = getattr(base, "unet", None)
        in_channels = getattr(getattr(unet, "config", None), "in_channels", 4)
        name = type(base).__name__
        if in_channels == 9 or "Inpaint" in name:
            self.pipes["inpaint"] = base
        elif "Img2Img" in name:
            self.pipes["img2img"] = base
        else:
            self.pipes["txt2img"] = base
            # Made before any tier is applied: from_pipe moves modules, which offload hooks forbid.
            self.pipes["img2img"] = diffusers.AutoPipelineForImage2Image.from_pipe(base)
            self.pipes["inpaint"] = diffusers.AutoPipelineForInpainting.from_pipe(base)
        for pipe in self.pipes.values():
            pipe.set_progress_bar_config(disable=True)
        self._hooked: Any = None
        self.tier = tier
        self._apply(tier)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(m for m in MODES if m in self.pipes)

    def _siblings(self) -> list:
        return [p for p in self.pipes.values() if p is not self.base]

    def _apply(self, tier: mt.Tier) -> None:
        mt.apply_tier(self.base, tier, siblings=self._siblings(), group_stream=self.group_stream)
        self._hooked = self.base
        self.tier = tier
        mt.note_tier(self.model.name, tier)

    def set_tier(self, tier: mt.Tier) -> None:
        self._apply(tier)

    def pipe_for(self, mode: str):
        if mode not in self.pipes:
            raise DiffusionInputError(f"{self.model.name} cannot do {mode}; it can do: {', '.join(self.modes)}")
        pipe = self.pipes[mode]
        if self.tier.placement == "model_offload" and pipe is not self._hooked:
            # Model offload hooks belong to the pipeline that made them (it re-arms them after
            # each call): hand them to this one. The modules are shared, nothing is copied.
            for other in self.pipes.values():
                other._all_hooks = []
            pipe.enable_model_cpu_offload(device=self.device)
            self._hooked = pipe
        return pipe

    def native_size(self) -> int:
        unet = getattr(self.base, "unet", None)
        sample = getattr(getattr(unet, "config", None), "sample_size", 64)
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        return int(sample) * int(getattr(self.base, "vae_scale_factor", 8))

    def sampler(self) -> str:
        return type(self.base.scheduler).__name__.removesuffix("Scheduler")

    def generate(self, mode: str, request: Request, image=None, mask=None,
                 progress: Callable[[int, int], None] | None = None,
                 cancelled: Callable[[], None] | None = None) -> list[Image.Image]:
        """PIL images with their parameters in .info['parameters'] (and the seed in .info['seed'])."""
        import torch

        request = check_request(mode, request, has_image=image is not None, has_mask=mask is not None)
        pipe = self.pipe_for(mode)
        width, height = _size(request, image, self.native_size())
        request = dataclasses.replace(request, width=width, height=height)
        seeds = [request.seed + i for i in range(request.batch)]
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]

        def on_step_end(p, step, timestep, callback_kwargs):
            if cancelled is not None:
                cancelled()
            if progress is not None:
                progress(step + 1, int(getattr(p, "num_timesteps", 0) or request.steps))
            return callback_kwargs

        kwargs: dict[str, Any] = dict(
            prompt=request.prompt, negative_prompt=request.negative_prompt or None,
            num_inference_steps=request.steps, guidance_scale=request.guidance,
            num_images_per_prompt=request.batch, generator=generators, output_type="pil",
            callback_on_step_end=on_step_end)
        if mode == "txt2img":
            kwargs.update(width=width, height=height)
        else:
            kwargs.update(image=to_rgb(image).resize((width, height), Image.LANCZOS), strength=request.strength)
        if mode == "inpaint":
            kwargs.update(mask_image=to_mask(mask).resize((width, height), Image.NEAREST), width=width,
                          height=height)
        with torch.inference_mode():
            images = pipe(**kwargs).images
        if mode == "inpaint":
            # The VAE round trip changes every pixel a little; outside the mask the picture is kept as
            # it was, with a feathered seam (as A1111 does).
            images = [paste_outside_mask(kwargs["image"], img, kwargs["mask_image"]) for img in images]
        fields_base = {"Steps": request.steps, "Sampler": self.sampler(), "CFG scale": request.guidance}
        out = []
        for img, seed in zip(images, seeds):
            fields = dict(fields_base)
            fields.update({"Seed": seed, "Size": f"{width}x{height}", "Model": self.model.name})
            if mode != "txt2img":
                fields["Denoising strength"] = request.strength
            fields.update({"Mode": mode, "Tier": self.tier.label, "Version": "wimmel"})
            img.info["parameters"] = format_parameters(request.prompt, request.negative_prompt, fields)
            img.info["seed"] = str(seed)
            out.append(img)
        return out

    def close(self) -> None:
        try:
            mt.reset_tier(self.base, self._siblings())
        finally:
            mt.forget_tier(self.model.name)
            self.pipes.clear()
            self.base = None


def load(model: DiffusionModel, device: str, *, tier: mt.Tier | None = None,
         memory: mt.MemoryReading | None = None, attention: str | None = None,
         group_stream: bool = False) -> DiffusionPipe:
    """Load a model for a device at the given tier, or at the tier its size and the memory choose."""
    import torch

    from engine.runtimes.torch_runtime import fault_in

    dtype = run_dtype(device)
    dtype_bytes = torch.finfo(dtype).bits // 8
    size = pipeline_size(model, dtype_bytes)
    if tier is None:
        from engine.devices import read_memory

        if memory is None:
            free = read_memory(device).free
            memory = mt.MemoryReading(device, free, free)
        native = default_size(model)
        tier = mt.choose_tier(size, memory, run_bytes=mt.estimate_run_bytes(native, native, 1, dtype_bytes),
                              attention=attention)
    base = load_pipeline(model, dtype)
    if not mt.is_accelerator(device):
        for module in mt._modules(base):
            fault_in(module)  # bill the weights to the load, not to the first run
    log.info("%s on %s: tier %s (%s)", model.name, device, tier.label, tier.reason)
    return DiffusionPipe(model, base, device, tier, size, group_stream=group_stream)


def default_size(model: DiffusionModel) -> int:
    """The model's native image side from its configs (sample_size x VAE scale), 512 if unknown."""
    path = Path(model.path)
    folder = Path(model.config) if path.is_file() and model.config else path
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        sample = unet.get("sample_size", 64)
        sample = sample[0] if isinstance(sample, list) else sample
        return int(sample) * 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
    except (OSError, ValueError):
        if path.is_file():
            model_type = single_file_type(path)
            return {"v2": 768, "xl_base": 1024, "xl_inpaint": 1024, "playground-v2-5": 1024}.get(model_type, 512)
        return 512


def defaults(model: DiffusionModel) -> dict:
    """What the tab's controls start at for a model."""
    side = default_size(model)
    if model.is_turbo:
        return {"width": side, "height": side, "steps": 2, "guidance": 0.0}
    return {"width": side, "height": side, "steps": 25, "guidance": 7.0}


# ---------------------------------------------------------------------------------- engine wiring

class DiffusionLoader:
    """ModelSpec.loader for a diffusion model; `family` tells the tabs what the spec is."""

    family = FAMILY

    def __init__(self, model: DiffusionModel, engine: Any = None):
        self.model, self.engine = model, engine

    def __call__(self, device: str) -> DiffusionPipe:
        memory = None
        if self.engine is not None:
            spec = self.engine.registry.get(self.model.name)
            own = self.engine.footprints.load_bytes(spec, device)
            memory = mt.read_memory(self.engine, device, own_bytes=own)
        return load(self.model, device, memory=memory)


def _unload(pipe: DiffusionPipe) -> None:
    if pipe is not None:
        pipe.close()


def model_spec(model: DiffusionModel, engine: Any = None) -> ModelSpec:
    """The engine's spec: role heavy, runtime torch, footprint from the file headers at the tier an
    empty device would give it (an SDXL on a small GPU is admitted at its offload size)."""
    device = engine.devices.default if engine is not None else "cpu"
    dtype_bytes = 2 if mt.is_accelerator(device) else 4
    side = 512
    try:
        side = default_size(model)
    except Exception:
        pass
    run = mt.estimate_run_bytes(side, side, 1, dtype_bytes)
    try:
        size = pipeline_size(model, dtype_bytes)
        estimate = size.total
        if engine is not None:
            _, estimate, run = mt.admission_estimate(
                size, device, engine.devices.memory(device).total, engine.devices.budget(device),
                engine.pool.reserve_bytes, run)
    except (OSError, DiffusionSetupError, ValueError):
        estimate = 2048 * MiB  # unreadable now: the load will say why
    return ModelSpec(
        name=model.name, role="heavy", runtime="torch", loader=DiffusionLoader(model, engine),
        source=model.path, estimate_bytes=estimate, run_estimate_bytes=run, unloader=_unload,
        description=model.description or f"Stable Diffusion ({'single file' if model.single_file else 'folder'})")


def batch_capability(name: str) -> str:
    return BATCH_PREFIX + name


def job_kind(name: str) -> JobKind:
    """One batch job kind per model: the queue groups jobs by the kind's model."""
    return JobKind(batch_capability(name), name, batch_job)


def register(engine: Any, model: DiffusionModel) -> ModelSpec:
    """Add a model to the engine: its spec and its batch job kind."""
    spec = model_spec(model, engine)
    engine.register(spec)
    engine.jobs.register(job_kind(model.name))
    return spec


def is_diffusion(spec: ModelSpec) -> bool:
    return getattr(spec, "family", None) == FAMILY or getattr(spec.loader, "family", None) == FAMILY


def diffusion_models(engine: Any) -> list[str]:
    """Names of the diffusion models registered in the engine."""
    return [spec.name for spec in engine.registry if is_diffusion(spec)]


def entry(engine: Any, name: str) -> DiffusionModel:
    spec = engine.registry.get(name)
    if not is_diffusion(spec):
        raise DiffusionInputError(f"{name} is not an image generation model")
    return spec.loader.model


def generate(run: Any, name: str, mode: str, request: Request, image=None, mask=None, *,
             progress: Callable[[int, int], None] | None = None,
             cancelled: Callable[[], None] | None = None) -> list[Image.Image]:
    """One generation inside an engine Run (or a JobContext): lease the model, run with OOM
    recovery whose degrade step lowers the model's memory tier, record the tier."""
    call = mt.TieredCall(lambda pipe: pipe.generate(mode, request, image, mask, progress, cancelled))
    return run.call(name, call, degrade=call.degrade)


# ---------------------------------------------------------------------------------- inputs

def check_request(mode: str, request: Request, *, has_image: bool = False, has_mask: bool = False) -> Request:
    """The request with a concrete seed, or a DiffusionInputError that says what to change."""
    if mode not in MODES:
        raise DiffusionInputError(f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    if not str(request.prompt or "").strip():
        raise DiffusionInputError("Write a prompt first.")
    if not 1 <= int(request.steps) <= MAX_STEPS:
        raise DiffusionInputError(f"Steps must be 1 to {MAX_STEPS}, not {request.steps}.")
    if not 0 <= float(request.guidance) <= 30:
        raise DiffusionInputError(f"Guidance must be 0 to 30, not {request.guidance}.")
    if not 1 <= int(request.batch) <= MAX_BATCH:
        raise DiffusionInputError(f"Batch size must be 1 to {MAX_BATCH}, not {request.batch}; "
                                  "for more images use a batch job.")
    for side in (request.width, request.height):
        if side is not None and not 64 <= int(side) <= MAX_SIDE:
            raise DiffusionInputError(f"Width and height must be 64 to {MAX_SIDE} px, not {side}.")
    if mode != "txt2img":
        if not has_image:
            raise DiffusionInputError(f"{mode} needs an input image.")
        if not 0 < float(request.strength) <= 1:
            raise DiffusionInputError(f"Strength must be above 0 and at most 1, not {request.strength}.")
        if int(request.steps) * float(request.strength) < 1:
            raise DiffusionInputError(
                f"Steps x strength is below 1 ({request.steps} x {request.strength}): nothing would be "
                "denoised. Raise the steps or the strength.")
    if mode == "inpaint" and not has_mask:
        raise DiffusionInputError("Inpaint needs a mask: white where the picture is repainted.")
    if request.seed is not None and int(request.seed) > SEED_MAX:
        raise DiffusionInputError(f"The seed must be 0 to {SEED_MAX} (or -1 for a random one).")
    return dataclasses.replace(request.resolved(), steps=int(request.steps), batch=int(request.batch),
                               guidance=float(request.guidance), strength=float(request.strength))


def _round8(value: float) -> int:
    return max(64, min(MAX_SIDE, int(round(value / 8)) * 8))


def _size(request: Request, image, native: int) -> tuple[int, int]:
    if request.width and request.height:
        return _round8(request.width), _round8(request.height)
    if image is not None:
        w, h = to_rgb(image).size
        scale = min(1.0, MAX_SIDE / max(w, h))
        return _round8(w * scale), _round8(h * scale)
    return _round8(request.width or native), _round8(request.height or native)


def to_rgb(image) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as img:
            return img.convert("RGB")
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = np.clip(array * (255 if array.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        if array.ndim == 2:
            return Image.fromarray(array).convert("RGB")
        return Image.fromarray(array[..., :3]).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise DiffusionInputError(f"Not an image: {type(image).__name__}")


def to_mask(mask) -> Image.Image:
    """White (or True) = repaint. Accepts a path, a PIL image, a bool/uint8/float array; an RGBA
    image (a drawn layer) uses its alpha where its colour is empty."""
    if isinstance(mask, (str, os.PathLike)):
        with Image.open(mask) as img:
            mask = img.copy()
    if isinstance(mask, Image.Image):
        if mask.mode in ("RGBA", "LA") and not np.asarray(mask.convert("L")).any():
            mask = mask.getchannel("A")
        mask = np.asarray(mask.convert("L"))
    array = np.asarray(mask)
    if array.ndim == 3:
        array = array[..., 3] if array.shape[2] == 4 and not array[..., :3].any() else array[..., :3].max(axis=2)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8) if array.max() <= 1.0 else array.astype(np.uint8)
    return Image.fromarray(np.where(array >= 128, 255, 0).astype(np.uint8), "L")


def feather_px(width: int, height: int) -> int:
    return max(1, round(min(width, height) / 128))


def paste_outside_mask(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated picture inside the mask, the original outside it, blended over a few pixels
    just outside the mask's edge. Pixels farther than the feather from the mask are the original's."""
    from PIL import ImageFilter

    radius = feather_px(*generated.size)
    hard = np.asarray(mask.convert("L"), np.float32) / 255.0
    grown = np.asarray(mask.convert("L").filter(ImageFilter.MaxFilter(2 * radius + 1))
                       .filter(ImageFilter.BoxBlur(radius)), np.float32) / 255.0
    alpha = np.maximum(hard, np.minimum(grown, 1.0))[..., None]
    out = np.asarray(original.convert("RGB"), np.float32) * (1 - alpha) + np.asarray(generated, np.float32) * alpha
    result = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    result.info.update(generated.info)
    return result


# ---------------------------------------------------------------------------------- PNG metadata

_PARAM = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',\n:"') else text


def format_parameters(prompt: str, negative_prompt: str, fields: dict) -> str:
    """A1111's 'parameters' text: the prompt, 'Negative prompt: ...', then 'Key: value, ...'."""
    lines = [prompt.strip()]
    if negative_prompt and negative_prompt.strip():
        lines.append(f"Negative prompt: {negative_prompt.strip()}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields.items()))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict:
    """The reverse of format_parameters (also reads A1111's own): prompt, negative_prompt, and each
    field; Steps/Seed as int, CFG scale/Denoising strength as float, Size as width/height."""
    lines = text.strip().split("\n")
    fields_line = lines[-1] if len(_PARAM.findall(lines[-1])) >= 3 else ""
    body = lines[:-1] if fields_line else lines
    prompt, negative, in_negative = [], [], False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict[str, Any] = {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip()}
    for key, value in _PARAM.findall(fields_line):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        out[key.strip()] = value
    for key in ("Steps", "Seed"):
        if key in out:
            out[key] = int(out[key])
    for key in ("CFG scale", "Denoising strength"):
        if key in out:
            out[key] = float(out[key])
    if "Size" in out and "x" in str(out["Size"]):
        out["width"], out["height"] = (int(v) for v in str(out["Size"]).split("x"))
    return out


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG with the image's 'parameters' as a text chunk (tEXt, iTXt when not Latin-1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if "parameters" in image.info:
        info.add_text("parameters", image.info["parameters"])
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def read_parameters(path: str | os.PathLike) -> dict:
    """The parameters of a PNG written by save_png (or by A1111), parsed; {} when there are none."""
    with Image.open(path) as img:
        text = getattr(img, "text", {}).get("parameters") or img.info.get("parameters")
    return parse_parameters(text) if text else {}


def output_folder(data_dir: str | os.PathLike, mode: str) -> Path:
    return Path(data_dir) / "outputs" / mode / dt.date.today().isoformat()


def image_name(index: int, seed: int) -> str:
    return f"{dt.datetime.now().strftime('%H%M%S')}-{index:04d}-{seed}.png"


# ---------------------------------------------------------------------------------- batch jobs

def batch_job(ctx: JobContext) -> str:
    """Job kind generate_batch:<model>. params: model, mode, count, request (a Request as a dict,
    its seed concrete); inputs 'image' and 'mask' for img2img / inpaint. Image i uses seed + i, one
    lease per image (interactive calls get the model in between); a resumed job continues after
    its last saved image. Returns a zip of the PNGs; the PNGs themselves are in images/."""
    params = ctx.params
    name, mode = params["model"], params["mode"]
    count = int(params.get("count", 1))
    if not 1 <= count <= MAX_COUNT:
        raise UserFacingError(f"A batch job makes 1 to {MAX_COUNT} images, not {count}.")
    fields = {k: v for k, v in params.get("request", {}).items() if k in {f.name for f in dataclasses.fields(Request)}}
    inputs = params.get("inputs", {})
    image = to_rgb(ctx.input("image")) if "image" in inputs else None
    mask = to_mask(ctx.input("mask")) if "mask" in inputs else None
    try:
        request = check_request(mode, Request(**{**fields, "batch": 1}), has_image=image is not None,
                                has_mask=mask is not None)
    except DiffusionInputError as exc:
        raise UserFacingError(str(exc)) from exc
    folder = ctx.work_dir / "images"
    done = int(ctx.checkpoint.get("done", 0))
    for i in range(done, count):
        ctx.check_cancelled()
        one = dataclasses.replace(request, seed=request.seed + i)

        def progress(step: int, total: int, i=i) -> None:
            ctx.progress((i + step / max(total, 1)) / count, f"image {i + 1} of {count}, step {step}/{total}")

        try:
            images = generate(ctx, name, mode, one, image, mask, progress=progress, cancelled=ctx.check_cancelled)
        except DiffusionInputError as exc:
            raise UserFacingError(str(exc)) from exc
        save_png(images[0], folder / f"{i:04d}-{one.seed}.png")
        ctx.save_checkpoint(done=i + 1)
    result = ctx.work_dir / "images.zip"
    with atomic_write(result) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for png in sorted(folder.glob("*.png")):
            archive.write(png, png.name)
    return str(result)


def batch_images(result: str | os.PathLike) -> list[str]:
    """The PNGs of a finished batch job, from its result path."""
    folder = Path(result).parent / "images"
    return [str(p) for p in sorted(folder.glob("*.png"))]
