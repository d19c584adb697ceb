"""Memory tiers: how a pipeline is placed given the memory there is, and one step down on an OOM.

A tier is a placement plus flags:

    placement           what lives on the device                          needs about
    full                every component                                   weights + activations
    model_offload       one component at a time (accelerate hooks)        largest component + act.
    group_offload       one block group at a time (diffusers hooks)       largest block group + act.
    sequential_offload  one leaf layer at a time (accelerate, meta)       largest layer + act.

    vae_tiling          the VAE decodes (and encodes) in tiles, one image of a batch at a time:
                        caps the decode spike of large images
    attention_slicing   attention one head at a time. With SDPA or xformers (memory-efficient
                        kernels) it rarely saves anything and slows every step, so it is only the
                        last step of the ladder, and never taken with xformers
    attention           'xformers' when it is installed and a tiny call works on the device,
                        else 'sdpa' (torch.nn.functional.scaled_dot_product_attention)

`choose_tier` picks the highest tier whose estimate fits the memory available (free memory on the
device, every process counted, and the engine's budget there, less the reserve). `next_tier` is
the OOM degrade step: one rung down the ladder. `apply_tier` sets a diffusers pipeline up for a
tier, undoing whatever tier it had. `TieredCall` wires a model with a tier into
`Run.call(..., degrade=...)`, so an OOM moves the model one tier down and retries, and the record
says so.

On the CPU the offload placements mean nothing: they move weights between host RAM and an
accelerator, and on a CPU-only machine the weights are in RAM whatever happens (diffusers 0.42
also refuses them: "requires accelerator, but not found"). There the ladder is full, then VAE
tiling, then attention slicing.

No torch or diffusers import at module level: importing the capability must not load them.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from engine.devices import format_bytes
from engine.runs import current_run

log = logging.getLogger(__name__)

MiB = 1024**2

PLACEMENTS = ("full", "model_offload", "group_offload", "sequential_offload")
OFFLOAD_PLACEMENTS = PLACEMENTS[1:]
ATTENTION = ("sdpa", "xformers")

# Rough share of a run's activation peak left with VAE tiling (and VAE slicing) on: at large
# sizes the VAE decode is the spike. A guess until measured; the OOM ladder covers a wrong one.
TILED_RUN_FACTOR = 0.5

CPU_NOTE = ("offload tiers need an accelerator: on the CPU the weights stay in RAM whatever the tier, "
            "so only VAE tiling and attention slicing apply")


# ---------------------------------------------------------------------------------- tiers

@dataclass(frozen=True)
class Tier:
    placement: str = "full"
    vae_tiling: bool = False
    attention_slicing: bool = False
    attention: str = "sdpa"  # 'sdpa' or 'xformers'
    device: str = "cpu"
    reason: str = field(default="", compare=False)  # why it was chosen, for the System tab

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {self.placement!r}; one of {PLACEMENTS}")
        if self.attention not in ATTENTION:
            raise ValueError(f"unknown attention backend {self.attention!r}; one of {ATTENTION}")

    @property
    def label(self) -> str:
        """'model_offload + vae_tiling (sdpa)': what the run record and the System tab show."""
        parts = [self.placement] + (["vae_tiling"] if self.vae_tiling else []) + (
            ["attention_slicing"] if self.attention_slicing else [])
        backend = "sliced" if self.attention_slicing else self.attention
        return f"{' + '.join(parts)} ({backend})"

    def to_dict(self) -> dict:
        return {"label": self.label, "placement": self.placement, "vae_tiling": self.vae_tiling,
                "attention_slicing": self.attention_slicing, "attention": self.attention,
                "device": self.device, "reason": self.reason}


def is_accelerator(device: str) -> bool:
    return device != "cpu"


def ladder(device: str, attention: str = "sdpa") -> list[Tier]:
    """Every tier for a device, most memory first. An OOM moves one rung down."""
    if not is_accelerator(device):
        rungs = [("full", False, False), ("full", True, False), ("full", True, True)]
    else:
        rungs = [("full", False, False), ("full", True, False), ("model_offload", True, False),
                 ("group_offload", True, False), ("sequential_offload", True, False)]
        if attention != "xformers":  # slicing would replace xformers' kernel with a worse one
            rungs.append(("sequential_offload", True, True))
    return [Tier(p, tiling, slicing, attention, device) for p, tiling, slicing in rungs]


def next_tier(tier: Tier) -> Tier | None:
    """The degrade step: the next rung down the tier's ladder, or None at the bottom."""
    rungs = ladder(tier.device, tier.attention)
    key = (tier.placement, tier.vae_tiling, tier.attention_slicing)
    position = next((i for i, t in enumerate(rungs)
                     if (t.placement, t.vae_tiling, t.attention_slicing) == key), None)
    if position is None:
        # Off the ladder (set by hand): the first rung that saves at least as much.
        order = {p: i for i, p in enumerate(PLACEMENTS)}
        below = [t for t in rungs if order[t.placement] > order[tier.placement]
                 or (t.placement == tier.placement and t.vae_tiling >= tier.vae_tiling
                     and t.attention_slicing > tier.attention_slicing)]
        return replace(below[0], reason="one step down after running out of memory") if below else None
    if position + 1 >= len(rungs):
        return None
    return replace(rungs[position + 1], reason="one step down after running out of memory")


# ---------------------------------------------------------------------------------- sizes and memory

@dataclass(frozen=True)
class PipelineSize:
    """Bytes a pipeline's weights take at the dtype it runs in, and the largest pieces that the
    offload placements keep on the device at once."""

    total: int
    largest_component: int
    largest_group: int  # a block group as diffusers' block-level group offloading forms them
    largest_layer: int
    components: dict[str, int] = field(default_factory=dict, compare=False)

    @classmethod
    def from_tensors(cls, components: dict[str, dict[str, int]]) -> "PipelineSize":
        """components: {component name: {tensor name: bytes}} (from file headers or a loaded model)."""
        totals, group_sizes, layer_sizes = {}, {}, {}
        for component, tensors in components.items():
            totals[component] = sum(tensors.values())
            for name, nbytes in tensors.items():
                key = (component, _group_of(component, name))
                group_sizes[key] = group_sizes.get(key, 0) + nbytes
                layer = (component, name.rsplit(".", 1)[0])
                layer_sizes[layer] = layer_sizes.get(layer, 0) + nbytes
        return cls(total=sum(totals.values()), largest_component=max(totals.values(), default=0),
                   largest_group=max(group_sizes.values(), default=0),
                   largest_layer=max(layer_sizes.values(), default=0), components=totals)

    @classmethod
    def of_pipeline(cls, pipe: Any) -> "PipelineSize":
        """Measured from a loaded pipeline's modules (parameters and buffers)."""
        import torch

        components = {}
        for name, module in getattr(pipe, "components", {}).items():
            if isinstance(module, torch.nn.Module):
                tensors = dict(module.named_parameters())
                tensors.update(dict(module.named_buffers()))
                components[name] = {k: t.numel() * t.element_size() for k, t in tensors.items()}
        return cls.from_tensors(components)

    def device_bytes(self, placement: str) -> int:
        """Weights on the device at once under a placement."""
        return {"full": self.total, "model_offload": self.largest_component,
                "group_offload": self.largest_group, "sequential_offload": self.largest_layer}[placement]


def _group_of(component: str, name: str) -> str:
    """The block group of a tensor under diffusers' block-level group offloading (1 block per
    group): each element of a top-level ModuleList (down_blocks.0, transformer_blocks.3), the
    blocks of a VAE's encoder and decoder (AutoencoderKL names them as block modules), and
    everything else of a component together. A text encoder (transformers) has no top-level
    ModuleList: it is one group."""
    parts = name.split(".")
    if component.startswith("text_encoder"):
        return "rest"
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[:2])
    if component == "vae" and parts[0] in ("encoder", "decoder"):
        return ".".join(parts[:3]) if len(parts) > 3 and parts[2].isdigit() else parts[0]
    if component == "vae" and parts[0] in ("quant_conv", "post_quant_conv"):
        return parts[0]
    return "rest"


@dataclass(frozen=True)
class MemoryReading:
    """What a tier choice needs to know about a device."""

    device: str
    free: int  # free memory on the device, every process counted
    budget_left: int  # the engine's budget there less what other models hold
    reserve: int = 0

    @property
    def available(self) -> int:
        return max(0, min(self.free, self.budget_left) - self.reserve)


def read_memory(engine: Any, device: str, own_bytes: int = 0) -> MemoryReading:
    """The engine's view of a device. `own_bytes`: what the pool already counts for the model
    being loaded (its admitted estimate), which must not count against itself."""
    free = engine.devices.memory(device).free
    held = max(0, engine.pool.resident_bytes(device) - own_bytes)
    return MemoryReading(device=device, free=free, budget_left=engine.devices.budget(device) - held,
                         reserve=engine.pool.reserve_bytes)


# ---------------------------------------------------------------------------------- attention backend

@functools.lru_cache(maxsize=None)
def xformers_status(device: str) -> tuple[bool, str]:
    """(works, why): xformers installed AND a tiny memory_efficient_attention call runs on the device."""
    if not is_accelerator(device):
        return False, "xformers runs on CUDA only"
    if importlib.util.find_spec("xformers") is None:
        return False, "xformers is not installed"
    try:
        import torch
        import xformers
        import xformers.ops

        q = torch.randn(1, 16, 2, 32, device=device, dtype=torch.float16)  # [batch, tokens, heads, dim]
        out = xformers.ops.memory_efficient_attention(q, q, q)
        torch.cuda.synchronize(device)
        if out.shape != q.shape or not torch.isfinite(out).all():
            return False, "xformers is installed but its attention gave a wrong result here"
    except Exception as exc:  # a wheel for another torch/CUDA fails in many ways
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return False, f"xformers is installed but does not work here: {first}"
    return True, f"xformers {getattr(xformers, '__version__', '?')} works on {device}"


def attention_backend(device: str) -> str:
    return "xformers" if xformers_status(device)[0] else "sdpa"


# ---------------------------------------------------------------------------------- choosing

def estimate_run_bytes(width: int, height: int, batch: int = 1, dtype_bytes: int = 2) -> int:
    """Activation peak of one Stable Diffusion call above its weights, a rough guess until the
    engine has measured one: about 2.4 KB per output pixel per image at 16-bit (the VAE decode
    dominates at large sizes; UNet attention is small with SDPA/xformers), plus 256 MiB."""
    return int(batch * width * height * 2400 * dtype_bytes / 2) + 256 * MiB


def choose_tier(size: PipelineSize, memory: MemoryReading, *, run_bytes: int,
                attention: str | None = None) -> Tier:
    """The highest tier whose estimate fits `memory.available`; the lowest, with a warning in its
    reason, when none does (the OOM ladder has nothing lower to offer then)."""
    device = memory.device
    attention = attention or attention_backend(device)
    available = memory.available
    rungs = ladder(device, attention)
    chosen, need = None, 0
    for tier in rungs:
        run = run_bytes * (TILED_RUN_FACTOR if tier.vae_tiling else 1.0)
        need = int(size.device_bytes(tier.placement) + run)
        if need <= available:
            chosen = tier
            why = f"needs about {format_bytes(need)}, {format_bytes(available)} available on {device}"
            break
    if chosen is None:
        chosen = rungs[-1]
        why = (f"does not fit even at the lowest tier: needs about {format_bytes(need)}, "
               f"{format_bytes(available)} available on {device}; trying anyway")
    if not is_accelerator(device):
        why += f"; {CPU_NOTE}"
    if attention == "sdpa" and is_accelerator(device):
        why += f"; attention: SDPA ({xformers_status(device)[1]})"
    return replace(chosen, reason=why)


def admission_estimate(size: PipelineSize, device: str, total: int, budget: int, reserve: int,
                       run_bytes: int) -> tuple[Tier, int, int]:
    """(tier, load bytes, run bytes) for a ModelSpec: what the pipeline holds on the device at the
    tier an otherwise empty device would get. The pool admits a load by these numbers, so a model
    too big for the device whole is still admitted at the offload tier its loader will choose
    (the measured load replaces the estimate afterwards)."""
    empty = MemoryReading(device, free=total, budget_left=budget, reserve=reserve)
    tier = choose_tier(size, empty, run_bytes=run_bytes, attention="sdpa")
    run = int(run_bytes * (TILED_RUN_FACTOR if tier.vae_tiling else 1.0))
    return tier, size.device_bytes(tier.placement), run


# ---------------------------------------------------------------------------------- applying (diffusers)

_GROUP_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


def reset_tier(pipe: Any, siblings: Iterable[Any] = ()) -> None:
    """Undo any offload: remove accelerate and diffusers offload hooks (weights come back from
    the meta device), forget sibling pipelines' model-offload hooks (pipelines made with
    from_pipe share the modules), and bring every component to the CPU."""
    import torch

    from engine.runtimes.torch_runtime import release_cached_memory

    pipes = [pipe, *siblings]
    for p in pipes:
        if hasattr(p, "remove_all_hooks"):
            p.remove_all_hooks()
    for module in torch_modules(pipe):
        for sub in module.modules():
            registry = getattr(sub, "_diffusers_hook", None)
            if registry is not None:
                for name in _GROUP_HOOKS:
                    registry.remove_hook(name, recurse=False)
    for p in pipes:
        p._all_hooks = []
    for module in torch_modules(pipe):
        if any(t.device.type != "cpu" for t in module.parameters()):
            module.to(torch.device("cpu"))
    release_cached_memory()


def torch_modules(pipe: Any) -> list:
    """The pipeline's components that are torch modules (not the tokenizer or the scheduler)."""
    import torch

    return [m for m in getattr(pipe, "components", {}).values() if isinstance(m, torch.nn.Module)]


def apply_tier(pipe: Any, tier: Tier, *, siblings: Iterable[Any] = (), group_stream: bool = False) -> None:
    """Place a diffusers pipeline for a tier. Any earlier tier is undone first.

    `siblings`: pipelines sharing the modules (from_pipe) whose own offload hooks must be forgotten.
    `group_stream`: group offloading with a CUDA stream (prefetches the next group while one
    computes; pins host memory). Off by default: it holds more host RAM and wants a CUDA device.
    """
    import torch

    reset_tier(pipe, siblings)
    device = torch.device(tier.device)
    if tier.placement == "full":
        pipe.to(device)
    elif tier.placement == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif tier.placement == "group_offload":
        pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1,
                                  use_stream=group_stream and device.type == "cuda")
    elif tier.placement == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=device)
    # Attention: slicing replaces the processors; turning it off restores SDPA, then xformers.
    if tier.attention_slicing:
        pipe.enable_attention_slicing("max")
    else:
        pipe.disable_attention_slicing()
        if tier.attention == "xformers":
            pipe.enable_xformers_memory_efficient_attention()
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_tiling"):
        if tier.vae_tiling:
            vae.enable_tiling()
            vae.enable_slicing()
        else:
            vae.disable_tiling()
            vae.disable_slicing()


# ---------------------------------------------------------------------------------- the run side

class TieredCall:
    """fn and degrade for `Run.call` on a model object with `.tier` and `.set_tier(tier)`:

        call = TieredCall(lambda model: model.generate(...))
        run.call(name, call, degrade=call.degrade)

    Each attempt records the tier it runs at; an OOM (after the engine freed what it could)
    moves the leased model one tier down, and the step lands on the run's record."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn
        self.model: Any = None

    def __call__(self, model: Any) -> Any:
        self.model = model
        record = current_run()  # the tier lands on the record of the call that uses it
        if record is not None and hasattr(record, "tier"):
            record.tier = model.tier.label
        return self.fn(model)

    def degrade(self, attempt: int) -> str | None:
        if self.model is None:
            return None
        old = self.model.tier
        new = next_tier(old)
        if new is None:
            return None
        self.model.set_tier(new)
        log.warning("memory tier %s -> %s", old.label, new.label)
        return f"memory tier {old.label} -> {new.label}"
