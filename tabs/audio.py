"""Audio: one tab, a sub-tab per capability. Each sub-module has TITLE, unavailable(), build(engine)."""
from __future__ import annotations

import importlib

import gradio as gr

from engine import Engine

TITLE = "Audio"
# Imported when the tab is built: a missing audio package then costs only its own sub-tab.
SECTIONS = ["audio_stt", "audio_tts", "audio_vad", "audio_denoise", "audio_pitch", "audio_voices"]


def unavailable() -> str | None:
    return None   # each section says for itself why it cannot run


def _section(name: str):
    try:
        return importlib.import_module(f"tabs.{name}"), None
    except ImportError as exc:
        return None, f"its code could not be imported ({exc}). Run ./setup.sh to install what it needs."


def build(engine: Engine) -> None:
    gr.Markdown("Audio files, or the sound of a video. Clips over a minute run as jobs on the queue.")
    with gr.Tabs():
        for name in SECTIONS:
            module, failure = _section(name)
            title = module.TITLE if module else name.removeprefix("audio_").upper()
            with gr.Tab(title):
                reason = failure or module.unavailable()
                if reason:
                    gr.Markdown(f"**{title} is unavailable here.** {reason}")
                else:
                    module.build(engine)
