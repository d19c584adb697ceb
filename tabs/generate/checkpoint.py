"""What a Stable Diffusion model's files say, read without loading a weight: the registry entry,
the tensor sizes per component from the safetensors headers (so a memory tier can be chosen
before the load), the single-file checkpoint's type and the diffusers configs it needs, the
native image size, and which files of a folder or hub repo make the model.

Two layouts: a diffusers folder (save_pretrained, as a hub download is laid out: model_index.json
and one folder per component) or one original-layout (LDM) `.safetensors` checkpoint.
"""
from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine import UserFacingError
from store.kinds import CONFIG_PATTERNS
from store.safetensors import FP16_VARIANT, safetensors_header

from .tiers import PipelineSize

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOATS = ("F64", "F32", "F16", "BF16")

# LDM single-file prefixes -> diffusers components (for sizes; the conversion itself is diffusers')
_LDM_PREFIXES = (("model.diffusion_model.", "unet"), ("first_stage_model.", "vae"), ("vae.", "vae"),
                 ("cond_stage_model.", "text_encoder"), ("conditioner.embedders.0.", "text_encoder"),
                 ("conditioner.embedders.1.", "text_encoder_2"))
_NATIVE_SIDE = {"v2": 768, "xl_base": 1024, "xl_inpaint": 1024, "playground-v2-5": 1024}


class DiffusionSetupError(UserFacingError, RuntimeError):
    """The model's files are missing or unusable; the message says what to download or fix."""


@dataclass(frozen=True)
class DiffusionModel:
    """One Stable Diffusion family model as the model store registers it."""

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


# ---------------------------------------------------------------------------------- sizes

def _tensor_bytes(info: dict, dtype_bytes: int) -> int:
    numel = int(np.prod(info["shape"])) if info["shape"] else 1
    size = dtype_bytes if info["dtype"] in _FLOATS else _DTYPE_BYTES.get(info["dtype"], 4)
    return numel * size


def _weights_files(folder: Path, variant: str | None) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if variant:
        chosen = [f for f in files if f".{variant}." in f.name]
    else:
        chosen = [f for f in files if not FP16_VARIANT.search(f.name)]
    return chosen or files


def model_index(folder: Path) -> dict:
    path = folder / "model_index.json"
    if not path.exists():
        raise DiffusionSetupError(
            f"{folder} is not a diffusers model folder (no model_index.json). Add the model through the "
            "Models tab, or point at a folder saved with save_pretrained (model_index.json, unet/, vae/, "
            "text_encoder/, tokenizer/, scheduler/).")
    return json.loads(path.read_text())


def components(index: dict) -> list[str]:
    """The pipeline's components named in model_index.json (unet, vae, text_encoder, ...)."""
    return [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v and v[0]]


def folder_variant(folder: Path, dtype_bytes: int) -> str | None:
    """'fp16' when the folder has fp16 variant files and we run in 16 bits (or it has nothing else)."""
    files = [f.name for f in folder.rglob("*.safetensors")]
    has_fp16 = any(".fp16." in f for f in files)
    has_plain = any(not FP16_VARIANT.search(f) for f in files)
    return "fp16" if has_fp16 and (dtype_bytes == 2 or not has_plain) else None


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
    variant = folder_variant(path, dtype_bytes)
    for component in components(model_index(path)):
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


def pipeline_size(model: DiffusionModel, dtype_bytes: int) -> PipelineSize:
    return PipelineSize.from_tensors(component_tensors(model, dtype_bytes))


# ---------------------------------------------------------------------------------- single files

class _Shape:
    def __init__(self, shape):
        self.shape = tuple(shape)


def single_file_type(path: str | os.PathLike) -> str:
    """diffusers' model type of an original-layout checkpoint ('v1', 'v2', 'xl_base', 'inpainting', ...)."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    lazy = {k: _Shape(v["shape"]) for k, v in safetensors_header(path).items()}
    return infer_diffusers_model_type(lazy)


def config_folder(model: DiffusionModel, model_type: str) -> str:
    """The diffusers configs a single file needs: the entry's `config`, or its family's repo in the
    hub cache. Never downloads: the model store does that."""
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


# ---------------------------------------------------------------------------------- native size

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
            return _NATIVE_SIDE.get(single_file_type(path), 512)
        return 512


def defaults(model: DiffusionModel) -> dict:
    """What the tab's controls start at for a model (turbo: 2 steps, no guidance)."""
    side = default_size(model)
    if model.is_turbo:
        return {"width": side, "height": side, "steps": 2, "guidance": 0.0}
    return {"width": side, "height": side, "steps": 25, "guidance": 7.0}


# ---------------------------------------------------------------------------------- the store's side

def is_diffusers_folder(path: Path) -> bool:
    return (Path(path) / "model_index.json").exists()


def repo_files(files: list[str], variant: str | None, read_json: Callable[[str], dict]) -> list[str] | None:
    """The files of a diffusers hub repo worth fetching, or None when the repo is not one (no
    model_index.json): the configs and one set of safetensors weights of each component listed in
    model_index.json (no fp16/ema variants unless `variant` asks, or a component has nothing
    else). The root-level single-file checkpoints some repos also carry (GBs each) are skipped."""
    if "model_index.json" not in files:
        return None
    try:
        listed = set(components(read_json("model_index.json")))
    except Exception:  # an unreadable index: every component folder of the repo
        listed = set()
    configs = [f for f in files if any(fnmatch.fnmatch(Path(f).name, p) for p in CONFIG_PATTERNS)]
    by_folder: dict[str, list[str]] = {}
    for f in files:
        folder = f.split("/")[0] if f.count("/") == 1 else ""
        if f.endswith(".safetensors") and folder and (not listed or folder in listed):
            by_folder.setdefault(folder, []).append(f)
    chosen = []
    for group in by_folder.values():
        plain = [f for f in group if not FP16_VARIANT.search(f)]
        if variant:
            chosen += [f for f in group if f".{variant}." in f] or plain
        else:
            chosen += plain or [f for f in group if ".fp16." in f] or group
    configs = [f for f in configs if "/" not in f or f.split("/")[0] in (listed or by_folder)]
    return sorted(set(configs + chosen))
