"""The pieces the capability tabs build their pages from, so that every tab has one look and one
wiring rule: a photo is picked, a result picture handed back and a video or recording uploaded the
same way everywhere, and every button is wired by one of two rules that say who limits how many
requests run at once.

- on_click: an answer while the user waits. Gradio runs at most two at a time per button (the
  app's default, said here so that it is seen); more wait in Gradio's queue.
- on_click_queued: work that waits on the job queue (videos, long files) or on a model's lease.
  Many may be waiting, and the queue, not Gradio, decides what runs when, so Gradio sets no limit.

Events that only change the page (show an option, take over a recording) stay out of the API and
show no progress.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import gradio as gr

from engine import UserFacingError

from . import costs, outputs
from .handlers import handler
from .texts import finished_texts, source_text

PHOTO_SOURCES = ["upload", "clipboard"]
VIDEO_JOB_NOTE = "The video runs as a job: it survives a closed browser and a restart, and shows on the Jobs tab."

Components = Any   # one Gradio component, or a list of them, as Gradio's events take them


@contextlib.contextmanager
def sub_tab(title: str, note: str | None = None) -> Iterator[None]:
    """One of a capability's sub-tabs: its title, a line on what it does, then the row that holds
    its inputs and outputs (and, below them in the code, the events that wire them)."""
    with gr.Tab(title):
        if note:
            gr.Markdown(note)
        with gr.Row():
            yield


def photo_input(label: str, **kw: Any) -> gr.Image:
    """A picture handed to the handler as an RGB numpy array (alpha dropped, so every model gets 3
    channels), from a file or the clipboard."""
    return gr.Image(label=label, type="numpy", image_mode="RGB", sources=list(PHOTO_SOURCES), **kw)


def picture_file_input(label: str, **kw: Any) -> gr.Image:
    """A picture handed over as a file path: what a job needs, since it outlives the request."""
    return gr.Image(label=label, type="filepath", sources=list(PHOTO_SOURCES), **kw)


def image_output(label: str) -> gr.Image:
    """A result picture, sent as PNG so that nothing the model made is lost to compression."""
    return gr.Image(label=label, type="numpy", format="png", interactive=False)


def picture_and_json(picture_label: str, json_label: str) -> tuple[gr.Image, gr.JSON]:
    """A result shown twice, in one column: the picture with what was found drawn on it, and the
    same findings as JSON."""
    with gr.Column():
        return image_output(picture_label), gr.JSON(label=json_label)


def video_input() -> gr.Video:
    """A video to process, uploaded as a file."""
    return gr.Video(label="Video", sources=["upload"])


def video_output(label: str) -> gr.Video:
    return gr.Video(label=label, interactive=False)


def media_input(label: str = "Audio or video file") -> gr.File:
    """An audio file or a video, whose soundtrack is used; a path, since long ones become jobs."""
    return gr.File(label=label, file_types=["audio", "video"], type="filepath")


def recording_as_file(path: str | None) -> str | None:
    """A finished microphone recording becomes the file to work on."""
    return path


def microphone_for(media: gr.File) -> gr.Audio:
    """A microphone whose finished recording becomes `media`, so the API has one input for every
    source."""
    mic = gr.Audio(label="Or record", sources=["microphone"], type="filepath", format="wav")
    page_only(mic.stop_recording, recording_as_file, mic, media)
    return mic


def page_only(event: Callable[..., Any], fn: Callable[..., Any], inputs: Components, outputs: Components) -> None:
    """Wire an event that only changes the page (e.g. `mode.change`): not in the API, no progress."""
    event(fn, inputs, outputs, api_visibility="private", show_progress="hidden")


def run_button(label: str, **kw: Any) -> gr.Button:
    """A tab's main button, with the line under it that tells what the current input will cost
    before it runs (ui/costs.py; wired by on_click or on_click_queued)."""
    button = gr.Button(label, variant="primary", **kw)
    button.cost_line = gr.Markdown("", elem_classes=["cost-line"])
    return button


def on_click(engine, button: gr.Button, fn: Callable[..., Any], action: str, inputs: Components,
             outputs: Components, api_name: str, **cost: Callable[..., Any]) -> None:
    """Wire a button to a handler answered while the user waits (see the module's docstring).
    `cost`, for the line under a run_button (ui/costs.wire): `bucket(*values)`, the size key the
    handler's run opens with where it is not the inputs' own (costs.request_size); `models(*values)`,
    the models a request uses where an input chooses them."""
    _wire(engine, button, fn, action, inputs, outputs, api_name, cost, concurrency_limit=2)


def on_click_queued(engine, button: gr.Button, fn: Callable[..., Any], action: str, inputs: Components,
                    outputs: Components, api_name: str, **cost: Callable[..., Any]) -> None:
    """Wire a button to a handler that waits on the job queue or a model's lease (see the module's
    docstring; `cost` as on_click's)."""
    _wire(engine, button, fn, action, inputs, outputs, api_name, cost, concurrency_limit=None)


def _wire(engine, button, fn, action, inputs, outputs, api_name, cost, concurrency_limit) -> None:
    listed = inputs if isinstance(inputs, list) else [inputs]
    event = button.click(handler(engine, costs.as_request(fn, api_name, listed), action), inputs, outputs,
                         api_name=api_name, concurrency_limit=concurrency_limit)
    line = getattr(button, "cost_line", None)
    if line is not None:
        costs.wire(engine, line, api_name, listed, event, **cost)


def texts_made(engine) -> gr.Dropdown:
    """The texts the app has made (finished transcription and video-text jobs, the last hours'
    transcriptions), as the choices of a dropdown, none chosen."""
    made = finished_texts(engine.jobs.list(), outputs.ROOT)
    return gr.Dropdown(choices=[(s["label"], s["id"]) for s in made], value=None)


def text_made(engine, source_id: str | None):
    """The plain text of one of texts_made's choices; the text box is left as it is when none is."""
    if not source_id:
        return gr.update()
    found = next((s for s in finished_texts(engine.jobs.list(), outputs.ROOT) if s["id"] == source_id), None)
    if found is None:
        raise UserFacingError("That text is gone (its job was deleted or its files swept): choose another.")
    return source_text(found)


def text_from_app(engine, textbox: gr.Textbox) -> gr.Dropdown:
    """A dropdown of the texts the app has made, read again whenever it is opened; choosing one
    puts its text in `textbox` (what was typed there is replaced, nothing else is lost)."""
    choice = gr.Dropdown(label="Or take a text the app made (transcripts, video text)", choices=[],
                         value=None, interactive=True)
    choice.focus(handler(engine, texts_made, "list the texts"), None, choice, api_visibility="private",
                 show_progress="hidden")
    choice.input(handler(engine, text_made, "take that text"), choice, textbox, api_visibility="private",
                 show_progress="hidden")
    return choice
