"""Which memory tier a request runs at: planned before each generation, from the memory there is
now and the request's size, so a tier moves both ways.

- `read_memory`: the engine's view of a device now: free memory (every process counted; on CUDA
  plus what this process's allocator caches, which is ours to reuse), plus what the pipeline
  itself holds there (its to move), the engine's budget less what the other models hold, and the
  reserve.
- `estimate_run_bytes`: the activation part of a request, which grows with width x height x batch.
- `choose_tier`: the highest rung of the ladder whose estimate fits what is available; the reason
  carries the numbers (shown in the System tab's tier table and on the run record).
- `TieredCall`: a model with `.plan(...)`, `.tier`, `.set_tier` inside `Run.call`. The first
  attempt of a request plans (the tier climbs back up when memory came free: another process gave
  it back, a model was evicted); an OOM moves one rung down for the retry, and
  `oom_scale` raises the pipeline's activation estimate so that the next request with the same
  memory does not run out again, while one with more memory back climbs again.

No torch import at module level: importing the capability must not load it.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from typing import Any, Callable

from engine.devices import format_bytes
from engine.runs import current_run

from .tiers import PipelineSize, Tier, attention_backend, is_accelerator, ladder, next_tier, xformers_status

log = logging.getLogger(__name__)

MiB = 1024**2

# Rough share of a run's activation peak left with VAE tiling (and VAE slicing) on: at large
# sizes the VAE decode is the spike. A guess until measured; the OOM ladder covers a wrong one.
TILED_RUN_FACTOR = 0.5
# After an OOM at a tier that seemed to fit, the activations needed more than there was: the
# estimate is raised to that much and this margin.
OOM_MARGIN = 1.1

CPU_NOTE = ("offload tiers need an accelerator: on the CPU the weights stay in RAM whatever the tier, "
            "so only VAE tiling and attention slicing apply")


@dataclass(frozen=True)
class MemoryReading:
    """What a tier choice needs to know about a device."""

    device: str
    free: int  # free memory on the device, every process counted
    budget_left: int  # the engine's budget there less what the other models hold
    reserve: int = 0
    own: int = 0  # what the pipeline itself holds on the device now: free for its next tier

    @property
    def available(self) -> int:
        return max(0, min(self.free + self.own, self.budget_left) - self.reserve)

    def describe(self) -> str:
        own = f" + {format_bytes(self.own)} it holds" if self.own else ""
        return (f"free {format_bytes(self.free)}{own}, budget left {format_bytes(self.budget_left)}, "
                f"reserve {format_bytes(self.reserve)}")


def read_memory(engine: Any, device: str, own_bytes: int = 0, own_device_bytes: int = 0) -> MemoryReading:
    """The engine's view of a device. `own_bytes`: what the pool counts for this pipeline (its
    measured load, or its admitted estimate while loading), which must not count against itself.
    `own_device_bytes`: what the pipeline holds on the device now (tiers.held_bytes)."""
    free = engine.devices.memory(device).free
    torch = sys.modules.get("torch")
    if is_accelerator(device) and torch is not None and torch.cuda.is_initialized():
        # Blocks this process's caching allocator keeps are used for the driver, free for us.
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    held = max(0, engine.pool.resident_bytes(device) - own_bytes)
    return MemoryReading(device=device, free=free, budget_left=engine.devices.budget(device) - held,
                         reserve=engine.pool.reserve_bytes, own=own_device_bytes)


def estimate_run_bytes(width: int, height: int, batch: int = 1, dtype_bytes: int = 2) -> int:
    """Activation peak of one Stable Diffusion call above its weights, a rough guess until the
    engine has measured one: about 2.4 KB per output pixel per image at 16-bit (the VAE decode
    dominates at large sizes; UNet attention is small with SDPA/xformers), plus 256 MiB."""
    return int(batch * width * height * 2400 * dtype_bytes / 2) + 256 * MiB


@dataclass(frozen=True)
class Plan:
    """A tier and the numbers it was chosen by (kept for learning from an OOM)."""

    tier: Tier
    weights: int  # weights on the device at once at this tier
    run: int  # the activation estimate at this tier
    available: int
    fits: bool

    @property
    def need(self) -> int:
        return self.weights + self.run


def plan_tier(size: PipelineSize, memory: MemoryReading, *, run_bytes: int, attention: str | None = None,
              what: str = "") -> Plan:
    """The highest tier whose estimate fits `memory.available`; the lowest, with a warning in its
    reason, when none does (the OOM ladder has nothing lower to offer then). `what` names the
    request in the reason ('512x512 x1')."""
    device = memory.device
    attention = attention or attention_backend(device)
    available = memory.available
    rungs = ladder(device, attention)
    plan = None
    for tier in rungs:
        run = int(run_bytes * (TILED_RUN_FACTOR if tier.vae_tiling else 1.0))
        plan = Plan(tier, size.device_bytes(tier.placement), run, available, fits=True)
        if plan.need <= available:
            break
    else:
        plan = replace(plan, fits=False)
    numbers = (f"about {format_bytes(plan.need)} (weights {format_bytes(plan.weights)} + activations "
               f"{format_bytes(plan.run)}), {format_bytes(available)} available on {device} ({memory.describe()})")
    why = (f"{what}: " if what else "") + ("needs " + numbers if plan.fits else
                                           "does not fit even at the lowest tier: needs " + numbers + "; trying anyway")
    if not is_accelerator(device):
        why += f"; {CPU_NOTE}"
    if attention == "sdpa" and is_accelerator(device):
        why += f"; attention: SDPA ({xformers_status(device)[1]})"
    return replace(plan, tier=replace(plan.tier, reason=why))


def choose_tier(size: PipelineSize, memory: MemoryReading, *, run_bytes: int,
                attention: str | None = None, what: str = "") -> Tier:
    return plan_tier(size, memory, run_bytes=run_bytes, attention=attention, what=what).tier


def oom_scale(plan: Plan | None, scale: float) -> float:
    """The activation scale after an OOM at `plan`'s tier: the call needed more than was left
    beside the weights, so the estimate becomes that much (and a margin). Unchanged when the plan
    did not fit anyway (nothing learned) or when the estimate was already above it."""
    if plan is None or not plan.fits or plan.run <= 0 or plan.available <= plan.weights:
        return scale
    return max(scale, scale * (plan.available - plan.weights) * OOM_MARGIN / plan.run)


def admission_estimate(size: PipelineSize, device: str, total: int, budget: int, reserve: int,
                       run_bytes: int) -> tuple[Tier, int, int]:
    """(tier, load bytes, run bytes) for a ModelSpec: what the pipeline holds on the device at the
    tier an otherwise empty device would get. The pool admits a load by these numbers, so a model
    too big for the device whole is still admitted at the offload tier its loader will choose
    (the measured load replaces the estimate afterwards)."""
    empty = MemoryReading(device, free=total, budget_left=budget, reserve=reserve)
    plan = plan_tier(size, empty, run_bytes=run_bytes, attention="sdpa")
    return plan.tier, plan.weights, plan.run


# ---------------------------------------------------------------------------------- the run side

class TieredCall:
    """fn and degrade for `Run.call` on a model object with `.tier` and `.set_tier(tier)` (and,
    for planning per request, `.plan()` returning a reason, and `.learn_oom()`):

        call = TieredCall(lambda model: model.generate(...), plan=lambda model: model.plan(...))
        run.call(name, call, degrade=call.degrade)

    The first attempt plans the request's tier (recorded with its numbers); retries keep the tier
    they are given. An OOM (after the engine freed what it could) moves the leased model one tier
    down, and the step lands on the run's record."""

    def __init__(self, fn: Callable[[Any], Any], plan: Callable[[Any], str] | None = None):
        self.fn, self.plan = fn, plan
        self.model: Any = None
        self.planned = plan is None

    def __call__(self, model: Any) -> Any:
        self.model = model
        record = current_run()  # the tier lands on the record of the call that uses it
        if not self.planned:
            why = self.plan(model)
            self.planned = True  # not before: an OOM while moving weights plans again after freeing
            if record is not None and why:
                record.steps.append(f"memory tier {model.tier.label}, {why}")
        elif hasattr(model, "ensure_tier"):
            model.ensure_tier()  # a retry after a failed move: put the tier in place again
        if record is not None and hasattr(record, "tier"):
            record.tier = model.tier.label
        return self.fn(model)

    def degrade(self, attempt: int) -> str | None:
        if self.model is None:
            return None
        self.planned = True  # the retry runs one rung down, not at a fresh plan
        old = self.model.tier
        new = next_tier(old)
        if new is None:
            return None
        if hasattr(self.model, "learn_oom"):
            self.model.learn_oom()
        self.model.set_tier(new)
        log.warning("memory tier %s -> %s", old.label, new.label)
        return f"memory tier {old.label} -> {new.label}"
