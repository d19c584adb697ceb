"""Models: add the models users bring (a hub id, the URL of a .safetensors file, a local folder or
file), see what is registered and what it takes on disk, remove. Added models show up in the tabs
of the capabilities that declare their kind (Generate: diffusion, Segment: sam).

The store itself is the top-level package `store`; build_engine makes one per engine
(engine.services["store"]) with its download_model job kind."""
from __future__ import annotations

TITLE = "Models"
GROUP = None


def specs() -> list:
    return []


def job_kinds() -> list:
    return []  # download_model belongs to the engine's store (tabs.catalog.connect_store)


def unavailable() -> str | None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return "huggingface_hub is not installed: run ./setup.sh."
    return None


def check(params: dict, inputs: dict) -> None:
    """An add request: a source, and only the options the store takes (source, kind, name,
    revision, sha256, allow_patterns, variant, config). The download_model job checks the same."""
    from store.job import check as check_download

    check_download(params, inputs)
