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

`next_tier` is the OOM degrade step: one rung down the ladder. `apply_tier` sets a diffusers
pipeline up for a tier: nothing when the tier is the one in place, only the flags when the
placement stays, else the earlier placement is undone first. Which tier a request gets (from the
memory there is now and the request's size) is tier_plan.py's part.

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
from typing import Any, Iterable

log = logging.getLogger(__name__)

MiB = 1024**2

PLACEMENTS = ("full", "model_offload", "group_offload", "sequential_offload")
OFFLOAD_PLACEMENTS = PLACEMENTS[1:]
ATTENTION = ("sdpa", "xformers")



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


def held_bytes(pipe: Any, device: str) -> int:
    """Bytes of the pipeline's weights on `device` now (each storage once). On an accelerator this
    is what the tier keeps there at rest (model offload: nothing between calls); on the CPU, every
    weight not on the meta device."""
    import torch

    seen, total = set(), 0
    for module in torch_modules(pipe):
        for tensor in [*module.parameters(), *module.buffers()]:
            kind = tensor.device.type
            if kind == "meta" or (kind == "cpu") != (device == "cpu"):
                continue
            storage = tensor.untyped_storage()
            key = (storage.data_ptr(), str(tensor.device))
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
    return total


def apply_tier(pipe: Any, tier: Tier, *, previous: Tier | None = None, siblings: Iterable[Any] = (),
               group_stream: bool = False) -> None:
    """Place a diffusers pipeline for a tier.

    `previous`: the tier in place now (None: unknown, so everything is set up from scratch). The
    same tier again costs nothing; a change of flags only (VAE tiling, attention) moves no weight;
    a change of placement undoes the earlier one first (hooks removed, weights back on the CPU).
    `siblings`: pipelines sharing the modules (from_pipe) whose own offload hooks must be forgotten.
    `group_stream`: group offloading with a CUDA stream (prefetches the next group while one
    computes; pins host memory). Off by default: it holds more host RAM and wants a CUDA device.
    """
    import torch

    if previous is not None and previous == tier:  # Tier equality leaves the reason out
        return
    if previous is None or (previous.placement, previous.device) != (tier.placement, tier.device):
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
