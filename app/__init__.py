"""Gradio assembly: one tab per capability, then the System tab. Knows nothing about memory."""
from __future__ import annotations

import gradio as gr

from engine import Engine

from . import cache_writes, images, jobs_tab, system_tab


def build_app(engine: Engine, tabs=None) -> gr.Blocks:
    if tabs is None:
        from tabs import TABS as tabs  # here, not at import: tabs import app's helpers
    with gr.Blocks(title="Wimmel") as demo:
        gr.Markdown("# Wimmel\nMany neural networks side by side on one machine.")
        with gr.Tabs():
            for tab in tabs:
                with gr.Tab(tab.TITLE):
                    reason = tab.unavailable()
                    if reason:
                        gr.Markdown(f"**{tab.TITLE} is unavailable here.** {reason}")
                    else:
                        tab.build(engine)
            with gr.Tab("Jobs"):
                jobs_tab.build(engine, demo)
            with gr.Tab("System"):
                system_tab.build(engine, demo)
    # Every picture a user uploads is decoded by our code (a pixel cap, any colour mode, plain
    # messages), whichever tab it goes to.
    images.guard_image_inputs(demo)
    # Two users given the same picture or sound must not share a half-written cache file.
    cache_writes.make_cache_writes_atomic()
    # Models run in worker threads; the pool serialises use of each instance, these limits keep
    # a burst of clicks from queueing more threads than the two cores can use.
    demo.queue(default_concurrency_limit=2)
    return demo
