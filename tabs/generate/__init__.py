"""Generate: txt2img, img2img and inpaint with the Stable Diffusion family models added in the
Models tab (1.x, 2.x, XL, turbo). Seeds reproduce images; every PNG carries its parameters.

Its models are the ones users add: the model store registers kind "diffusion" (a diffusers
folder with model_index.json, or one .safetensors checkpoint) and calls store_added /
store_removed, which make each one an engine model with its batch job kind.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint import is_diffusers_folder
from .checkpoint import repo_files as store_repo_files
from .request import check

__all__ = ["TITLE", "GROUP", "specs", "job_kinds", "unavailable", "check",
           "STORE_KIND", "STORE_WANTS", "STORE_ONE_FILE", "recognises", "store_repo_files",
           "store_added", "store_removed"]

TITLE = "Generate"
GROUP = None

STORE_KIND = "diffusion"
STORE_WANTS = "a diffusers pipeline folder (no model_index.json)"
STORE_ONE_FILE = True  # one .safetensors file is an original-layout checkpoint of this kind


def specs() -> list:
    return []


def job_kinds() -> list:
    return []  # one batch job kind per added model, registered with it (store_added)


def unavailable() -> str | None:
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed: run ./setup.sh (it installs diffusers and transformers)."
    return None


def recognises(path: str | Path) -> bool:
    """A diffusers pipeline folder (model_index.json) or one .safetensors checkpoint."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".safetensors"
    return is_diffusers_folder(path)


def store_added(engine, entry: dict) -> None:
    """A stored model of this kind becomes an engine model (idempotent for the same path)."""
    from engine import UserFacingError

    from .checkpoint import DiffusionModel
    from .registry import is_diffusion, register

    if entry["name"] in engine.registry:
        spec = engine.registry.get(entry["name"])
        if is_diffusion(spec) and spec.loader.model.path == entry["path"]:
            return  # already there (a second connect, or the same entry announced again)
        raise UserFacingError(f"The engine already has a model named {entry['name']!r}; "
                              "remove the store entry and add it under another name.")
    register(engine, DiffusionModel(name=entry["name"], path=entry["path"], config=entry.get("config"),
                                    description=f"Stable Diffusion family, from {entry['source']}"))


def store_removed(engine, entry: dict) -> None:
    engine.unregister(entry["name"])
