"""Gradio assembly: one tab per capability (grouped ones share a tab), then Jobs and System."""
from __future__ import annotations

import importlib
import itertools

import gradio as gr

from engine import Engine
from tabs import GROUPS, capabilities
from ui.gradio_patches import patch_gradio

from . import jobs_tab, system_tab


def _capability_tab(engine: Engine, capability) -> None:
    reason = capability.unavailable()
    if reason:
        gr.Markdown(f"**{capability.TITLE} is unavailable here.** {reason}")
    else:
        importlib.import_module(f"{capability.__name__}.tab").build(engine)


def build_app(engine: Engine, tabs=None) -> gr.Blocks:
    tabs = capabilities() if tabs is None else tabs
    with gr.Blocks(title="Wimmel") as demo:
        gr.Markdown("# Wimmel\nMany neural networks side by side on one machine.")
        with gr.Tabs():
            for group, members in itertools.groupby(tabs, key=lambda c: c.GROUP):
                if group is None:
                    for capability in members:
                        with gr.Tab(capability.TITLE):
                            _capability_tab(engine, capability)
                    continue
                with gr.Tab(group):
                    gr.Markdown(GROUPS[group])
                    with gr.Tabs():
                        for capability in members:
                            with gr.Tab(capability.TITLE):
                                _capability_tab(engine, capability)
            with gr.Tab("Jobs"):
                jobs_tab.build(engine, demo)
            with gr.Tab("System"):
                system_tab.build(engine, demo)
    # Every picture a user uploads is decoded by our code (a pixel cap, any colour mode, plain
    # messages), whichever tab it goes to; two users given the same picture or sound never
    # share a half-written cache file.
    patch_gradio(demo)
    # Models run in worker threads; the pool serialises use of each instance, these limits keep
    # a burst of clicks from queueing more threads than the two cores can use.
    demo.queue(default_concurrency_limit=2)
    return demo


# Gradio processes at most `max_threads` events at once (40 by default), async ones too: people
# following their jobs (ui.jobs, no thread each) would fill those places and leave an interactive
# click waiting. launch.py raises it to this; the threads our handlers use stay bounded by
# anyio's own 40 (ui.handlers), the events' concurrency limits bound each endpoint.
EVENTS_AT_ONCE = 1000
