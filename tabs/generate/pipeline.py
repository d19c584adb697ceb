"""Stable Diffusion family (1.x, 2.x, XL, turbo) through diffusers: txt2img, img2img, inpaint.

Only safetensors are read: folders load with `use_safetensors=True` (no pickle fallback),
`.ckpt`/`.bin`/`.pt` single files are refused. Loading never touches the network: a single file
needs its family's diffusers configs (model_index.json, tokenizer, scheduler, component configs)
either as a local folder (`config=`) or already in the hub cache; otherwise the error says what to
download (checkpoint.config_folder).

- `load` picks a memory tier (tier_plan.py) from the file headers' exact tensor sizes and the
  device's free memory and budget, loads on the CPU, then places the pipeline for that tier.
  img2img and inpaint pipelines are made with `from_pipe`: they share the modules, no second copy.
- `DiffusionPipe` is the loaded model: its pipelines per mode, its tier (reported to the engine as
  its `placement`), `plan` (the tier for one request, from the memory there is now) and `generate`.
- `generate(call, name, mode, request, ...)` runs one call: plans its tier first (it climbs back
  up when memory came free), then runs with OOM recovery: an OOM moves the model one tier down
  and retries; the tier and why (numbers) land on the run record.
- Seeds: image i of a batch uses seed + i with its own CPU torch.Generator, so every image can be
  made again alone, and a seed gives the same starting noise on CPU and GPU (diffusers'
  recommendation for reproducible pipelines; the noise is moved to the device).
- Every image carries its parameters in a PNG `parameters` text chunk, A1111's format.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from store.safetensors import PICKLE_SUFFIXES

from . import tier_plan, tiers
from .checkpoint import (DiffusionModel, DiffusionSetupError, config_folder, default_size, folder_variant,
                         model_index, pipeline_size, single_file_type)
from .images import output_size, paste_outside_mask, to_mask, to_rgb
from .png_info import format_parameters
from .request import MODES, DiffusionInputError, Request, check_request

log = logging.getLogger(__name__)

_SINGLE_FILE_CLASSES = {
    "v1": "StableDiffusionPipeline", "v2": "StableDiffusionPipeline",
    "inpainting": "StableDiffusionInpaintPipeline", "inpainting_v2": "StableDiffusionInpaintPipeline",
    "xl_base": "StableDiffusionXLPipeline", "xl_inpaint": "StableDiffusionXLInpaintPipeline",
    "playground-v2-5": "StableDiffusionXLPipeline",
}
# Turned off in the pipelines that have one: the NSFW gate of the app decides what is shown.
_NO_SAFETY_CHECKER = {"safety_checker": None, "requires_safety_checker": False}


def run_dtype(device: str):
    import torch

    return torch.float16 if tiers.is_accelerator(device) else torch.float32


def load_pipeline(model: DiffusionModel, dtype=None):
    """The model's base pipeline on the CPU (txt2img, or inpaint for inpainting checkpoints)."""
    import diffusers
    import torch

    dtype = dtype or torch.float32
    path = Path(model.path)
    if not path.exists():
        raise DiffusionSetupError(f"{model.name}: {path} does not exist. Add the model again in the Models tab.")
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
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
        kwargs = _NO_SAFETY_CHECKER if "XL" not in cls_name else {}
        pipe = cls.from_single_file(str(path), config=config_folder(model, model_type), local_files_only=True,
                                    dtype=dtype, **kwargs)
    else:
        index = model_index(path)
        kwargs = _NO_SAFETY_CHECKER if "safety_checker" in index else {}
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

    def __init__(self, model: DiffusionModel, base: Any, device: str, tier: tiers.Tier,
                 size: tiers.PipelineSize, group_stream: bool = False,
                 memory_source: Callable[[int], tier_plan.MemoryReading] | None = None,
                 dtype_bytes: int | None = None):
        import diffusers

        self.model, self.device, self.size = model, device, size
        self.base = base
        self.group_stream = group_stream
        # memory_source(bytes the pipeline holds on the device now) -> the engine's reading
        self.memory_source = memory_source
        self.dtype_bytes = dtype_bytes or (2 if tiers.is_accelerator(device) else 4)
        self.run_scale = 1.0  # the activation estimate's factor, raised by OOMs (tier_plan.oom_scale)
        self.last_plan: tier_plan.Plan | None = None
        self._applied: tiers.Tier | None = None  # the tier truly in place (None: unknown)
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
        self.set_tier(tier)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(m for m in MODES if m in self.pipes)

    @property
    def placement(self) -> dict:
        """Where the model is now and why, as the engine's status reports it (the System tab)."""
        return {"device": self.tier.device, "tier": self.tier.label, "why": self.tier.reason}

    def _siblings(self) -> list:
        return [p for p in self.pipes.values() if p is not self.base]

    @property
    def device_bytes(self) -> int:
        """Bytes of weights on the device now, at rest (what the tier keeps there)."""
        return tiers.held_bytes(self.base, self.device)

    def set_tier(self, tier: tiers.Tier) -> None:
        """Put a tier in place: nothing to do when it is the one in place (the reason is updated),
        flags only when the placement stays, else the old placement is undone first."""
        previous, self._applied = self._applied, None
        try:
            tiers.apply_tier(self.base, tier, previous=previous, siblings=self._siblings(),
                             group_stream=self.group_stream)
        finally:
            self.tier = tier  # a failed move leaves _applied unknown: the next set_tier redoes it
        if previous is None or (previous.placement, previous.device) != (tier.placement, tier.device):
            self._hooked = self.base
        self._applied = tier

    def ensure_tier(self) -> None:
        if self._applied is None or self._applied != self.tier:
            self.set_tier(self.tier)

    def reading(self) -> tier_plan.MemoryReading:
        own = tiers.held_bytes(self.base, self.device)
        if self.memory_source is not None:
            return self.memory_source(own)
        from engine.devices import read_memory  # no engine: the device alone

        free = read_memory(self.device).free
        return tier_plan.MemoryReading(self.device, free=free, budget_left=free + own, own=own)

    def plan(self, mode: str, request: Request, image=None, mask=None) -> str:
        """Plan and put in place the tier for one request, from the memory there is now and the
        request's width x height x batch; returns why (numbers)."""
        request = check_request(mode, request, image, mask)
        width, height = output_size(request, image, self.native_size())
        what = f"planned for {width}x{height} x{request.batch}"
        if self.run_scale > 1.0:
            what += f" (activations x{self.run_scale:.2f} since an out-of-memory)"
        run = int(tier_plan.estimate_run_bytes(width, height, request.batch, self.dtype_bytes) * self.run_scale)
        plan = tier_plan.plan_tier(self.size, self.reading(), run_bytes=run, attention=self.tier.attention,
                                   what=what)
        if plan.tier != self.tier:
            log.info("%s: memory tier %s -> %s (%s)", self.model.name, self.tier.label, plan.tier.label,
                     plan.tier.reason)
        self.set_tier(plan.tier)
        self.last_plan = plan
        return plan.tier.reason

    def learn_oom(self) -> None:
        """The planned tier ran out of memory: raise the activation estimate (tier_plan.oom_scale)."""
        if self.last_plan is not None and self.last_plan.tier == self.tier:
            self.run_scale = tier_plan.oom_scale(self.last_plan, self.run_scale)

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

        request = check_request(mode, request, image, mask)
        pipe = self.pipe_for(mode)
        width, height = output_size(request, image, self.native_size())
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
            tiers.reset_tier(self.base, self._siblings())
        finally:
            self.pipes.clear()
            self.base = None


def load(model: DiffusionModel, device: str, *, tier: tiers.Tier | None = None,
         memory: tier_plan.MemoryReading | None = None,
         memory_source: Callable[[int], tier_plan.MemoryReading] | None = None,
         attention: str | None = None, group_stream: bool = False) -> DiffusionPipe:
    """Load a model for a device at the given tier, or at the tier its size and the memory choose
    (`memory`, else `memory_source(0)`, else the device's free memory). `memory_source` stays with
    the pipeline: each request plans its tier from it (DiffusionPipe.plan)."""
    import torch

    from engine.runtimes.torch_runtime import fault_in

    dtype = run_dtype(device)
    dtype_bytes = torch.finfo(dtype).bits // 8
    size = pipeline_size(model, dtype_bytes)
    if tier is None:
        from engine.devices import read_memory

        if memory is None and memory_source is not None:
            memory = memory_source(0)
        if memory is None:
            free = read_memory(device).free
            memory = tier_plan.MemoryReading(device, free, free)
        native = default_size(model)
        tier = tier_plan.choose_tier(size, memory, attention=attention, what=f"at load, for {native}x{native} x1",
                                     run_bytes=tier_plan.estimate_run_bytes(native, native, 1, dtype_bytes))
    base = load_pipeline(model, dtype)
    if not tiers.is_accelerator(device):
        for module in tiers.torch_modules(base):
            fault_in(module)  # bill the weights to the load, not to the first run
    log.info("%s on %s: tier %s (%s)", model.name, device, tier.label, tier.reason)
    return DiffusionPipe(model, base, device, tier, size, group_stream=group_stream,
                         memory_source=memory_source, dtype_bytes=dtype_bytes)


def generate(call: Callable, name: str, mode: str, request: Request, image=None, mask=None, *,
             progress: Callable[[int, int], None] | None = None,
             cancelled: Callable[[], None] | None = None) -> list[Image.Image]:
    """One generation through `call` (a run's or a job's): lease the model, plan its memory tier
    for this request, run with OOM recovery whose degrade step lowers the tier, record the tier."""
    tiered = tier_plan.TieredCall(lambda pipe: pipe.generate(mode, request, image, mask, progress, cancelled),
                                  plan=lambda pipe: pipe.plan(mode, request, image, mask))
    return call(name, tiered, degrade=tiered.degrade)
