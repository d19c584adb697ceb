"""Diffusion models as engine models: each model the store adds gets a ModelSpec (role heavy,
runtime torch, sized from its file headers) whose loader picks the memory tier, and its batch job
kind; the tab asks here which registered models are diffusion models."""
from __future__ import annotations

from typing import Any

from engine import JobKind, ModelSpec, UserFacingError

from . import tier_plan, tiers
from .batch import batch_capability, batch_job
from .checkpoint import DiffusionModel, default_size, pipeline_size
from .pipeline import DiffusionPipe, load
from .request import DiffusionInputError, check

MiB = 1024**2
FAMILY = "diffusion"


class DiffusionLoader:
    """ModelSpec.loader for a diffusion model; `family` tells the tabs what the spec is."""

    family = FAMILY

    def __init__(self, model: DiffusionModel, engine: Any = None):
        self.model, self.engine = model, engine

    def __call__(self, device: str) -> DiffusionPipe:
        return load(self.model, device, memory_source=self.memory_source(device))

    def memory_source(self, device: str):
        """reading(bytes the pipeline holds on the device now): the engine's view of the device for
        this model, read again before each request (tier_plan.read_memory)."""
        engine, name = self.engine, self.model.name
        if engine is None:
            return None

        def reading(own_device_bytes: int) -> tier_plan.MemoryReading:
            try:  # what the pool counts for this model: its measured load (its estimate while loading)
                own = engine.footprints.load_bytes(engine.registry.get(name), device)
            except KeyError:  # removed from the registry while loaded
                own = 0
            return tier_plan.read_memory(engine, device, own_bytes=own, own_device_bytes=own_device_bytes)

        return reading


def _unload(pipe: DiffusionPipe) -> None:
    if pipe is not None:
        pipe.close()


def model_spec(model: DiffusionModel, engine: Any = None) -> ModelSpec:
    """The engine's spec: role heavy, runtime torch, footprint from the file headers at the tier an
    empty device would give it (an SDXL on a small GPU is admitted at its offload size)."""
    device = engine.devices.default if engine is not None else "cpu"
    dtype_bytes = 2 if tiers.is_accelerator(device) else 4
    side = 512
    try:
        side = default_size(model)
    except Exception:
        pass
    run = tier_plan.estimate_run_bytes(side, side, 1, dtype_bytes)
    try:
        size = pipeline_size(model, dtype_bytes)
        estimate = size.total
        if engine is not None:
            _, estimate, run = tier_plan.admission_estimate(
                size, device, engine.devices.memory(device).total, engine.devices.budget(device),
                engine.pool.reserve_bytes, run)
    except (OSError, ValueError, UserFacingError):
        estimate = 2048 * MiB  # unreadable now: the load will say why
    return ModelSpec(
        name=model.name, role="heavy", runtime="torch", loader=DiffusionLoader(model, engine),
        source=model.path, estimate_bytes=estimate, run_estimate_bytes=run, unloader=_unload,
        description=model.description or f"Stable Diffusion ({'single file' if model.single_file else 'folder'})")


def job_kind(name: str) -> JobKind:
    """One batch job kind per model: the queue groups jobs by the kind's model."""
    return JobKind(batch_capability(name), name, batch_job, check=check)


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
