"""Generate: txt2img, img2img and inpaint with the Stable Diffusion family models added in the
Models tab (1.x, 2.x, XL, turbo). Seeds reproduce images; every PNG carries its parameters."""
from __future__ import annotations

TITLE = "Generate"
GROUP = None


def specs() -> list:
    return []


def job_kinds() -> list:
    return []


def unavailable() -> str | None:
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed: run ./setup.sh (it installs diffusers and transformers)."
    return None
