"""Models: add the models users bring (a hub id, the URL of a .safetensors file, a local folder or
file), see what is registered and what it takes on disk, remove. Added models show up in the
Generate (kind diffusion) and Segment (kind sam) tabs."""
from __future__ import annotations

TITLE = "Models"
GROUP = None


def specs() -> list:
    return []


def job_kinds() -> list:
    return []


def unavailable() -> str | None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return "huggingface_hub is not installed: run ./setup.sh."
    return None
