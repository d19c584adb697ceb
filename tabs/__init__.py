"""Every capability, in tab order. Adding one is a folder here and a line in CAPABILITIES.

A capability is a package `tabs/<name>/` whose __init__ holds the contract (no Gradio):
TITLE, GROUP (a tab that groups several, or None), specs(), job_kinds(), unavailable() and
check(...), and hub_files() where it loads ONNX files users download (store/manifest.py; its
specs(data_dir) then look for them in the engine's data dir); its model code sits beside it, and
`tab.py` builds its tab from module-level handlers.
"""
from __future__ import annotations

import functools
import importlib
import logging
import types

log = logging.getLogger(__name__)

CAPABILITIES = [
    "faces", "face_restore", "face_swap", "lip_sync", "portrait_animation", "landmarks", "pose", "hands",   # GROUP "People"
    "background", "style", "upscale", "deblock", "segment", "nsfw",   # GROUP "Images"
    "ocr", "document", "language", "search", "entities",   # GROUP "Text"
    "stt", "tts", "vad", "denoise", "pitch", "notes", "voices", "keywords", "tags",   # GROUP "Audio"
    "generate", "models",
]
# A tab that groups several capabilities (a sub-tab each; members are consecutive above), and the
# line it opens with. Eight tabs in all, so the tab bar fits a laptop's width without a menu.
GROUPS = {"People": "Faces, face restoration, face swap, lip sync, portrait animation, face landmarks, body pose and hands, in photos and videos. "
                    "Videos run as jobs on the queue.",
          "Images": "Photos in, photos out: background, style, upscaling, clean-up, segmentation and the NSFW check.",
          "Audio": "Audio files, or the sound of a video. Long clips run as jobs on the queue.",
          "Text": "Text in pictures and pages, text you paste, and what the app has transcribed or read."}


@functools.lru_cache(maxsize=None)
def capability(name: str) -> types.ModuleType:
    """The capability's package; one whose code cannot be imported (a package missing) stands in
    as a module that has no models and says why, so it costs only its own tab."""
    try:
        return importlib.import_module(f"tabs.{name}")
    except ImportError as exc:
        log.warning("capability %s is unavailable: %s", name, exc)
        reason = f"Its code could not be imported ({exc}). Run ./setup.sh to install what it needs."
        stand_in = types.ModuleType(f"tabs.{name}")
        stand_in.TITLE, stand_in.GROUP = name.capitalize(), None
        stand_in.specs = stand_in.job_kinds = list
        stand_in.unavailable = lambda: reason
        return stand_in


def capabilities() -> list[types.ModuleType]:
    return [capability(name) for name in CAPABILITIES]
