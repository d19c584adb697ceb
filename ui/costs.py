"""The cost of a request, shown before it runs: under each tab's run button a line that says what
this input will need (memory on its device, time, a model to load first, idle models evicted for
it) and, once it ran, what the last run took against what was predicted; and the API's one
`estimate` endpoint that answers the same for any endpoint. The numbers are engine/costs.py's."""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

import gradio as gr

from engine import Engine, UserFacingError
from engine.costs import Cost, estimate, request_size
from engine.devices import rounded_bytes
from engine.predict import parse_key
from engine.runs import Request
from engine.timings import endpoint_of

log = logging.getLogger(__name__)

# The inputs whose value has a size (a picture, a file, a text); options (radios, sliders) do not.
SIZED = (gr.Image, gr.ImageEditor, gr.File, gr.Video, gr.Audio, gr.Textbox)
NOT_YET = ("**Before you run:** not measured here yet. The first run learns the memory and time this "
           "needs; from then on this line tells them before you press the button.")


def size_text(size: str | None) -> str:
    sized = parse_key(size)
    if sized is None:
        return "this input"
    unit, n = sized
    if unit == "px":
        return f"a {n / 1e6:.2g} MP picture" if n >= 1e5 else f"a {int(n):,} pixel picture"
    if unit == "s":
        return f"{n:,.1f} s of audio or video"
    if unit == "pxsteps":   # image generation: width x height x images x steps
        return f"{n / 1e6:,.0f} megapixel-steps (width × height × images × steps)"
    return f"{int(n):,} {'characters' if unit == 'chars' else unit}"


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 1 else f"{s:.1f} s" if s < 60 else f"{s / 60:.1f} min"


def cost_text(cost: Cost, last: dict | None = None) -> str:
    """The line under a run button (Markdown)."""
    if not cost.known:
        return NOT_YET
    if cost.verdict == "refused":
        return f"**Before you run:** {size_text(cost.size)} would be refused: {cost.reason}."
    memory = " + ".join(f"{rounded_bytes(n)} on {d}" for d, n in cost.need_bytes.items())
    parts = [f"**Before you run:** {size_text(cost.size)} needs about {memory}"]
    loading = [m for m in cost.models if not m.resident]
    if loading:
        parts.append("loading " + ", ".join(
            f"{m.name} first ({rounded_bytes(m.load_bytes)}" + (", a copy back from host RAM" if m.parked else "")
            + (f", {_seconds(m.load_s)})" if m.load_s else ")")
            for m in loading))
    else:
        parts.append(", ".join(m.name for m in cost.models) + (" is" if len(cost.models) == 1 else " are")
                     + " loaded")
    if cost.seconds is not None:
        parts.append(f"about {_seconds(cost.seconds)} of work")
    if cost.verdict == "evicts":
        parts.append(f"to make room it unloads {', '.join(cost.evicts)} (idle)")
    elif cost.verdict == "waits":
        parts.append(cost.reason)
    else:
        parts.append("memory is free for it now")
    text = "; ".join(parts) + "."
    if last:
        text += "  \n" + last_run_text(last)
    return text


def last_run_text(record: dict) -> str:
    """What the endpoint's last run took against what was predicted for it."""
    spent = max(record["wall_s"] - record["load_s"] - record["queue_wait_s"], 0.0)
    said = [f"Last run: {_seconds(spent)} of work"]
    if record.get("seconds_predicted") is not None:
        said[-1] += f" (expected {_seconds(record['seconds_predicted'])})"
    if record.get("load_s"):
        said.append(f"{_seconds(record['load_s'])} loading")
    if record.get("run_bytes_measured") is not None:
        peak = f"run peak {rounded_bytes(record['run_bytes_measured'])}"
        if record.get("run_bytes_predicted") is not None:
            peak += f" (predicted {rounded_bytes(record['run_bytes_predicted'])})"
        said.append(peak)
    return ", ".join(said) + "."


def last_run(engine: Engine, endpoint: str) -> dict | None:
    for record in engine.runs.latest(200):
        if record.status == "ok" and endpoint_of(record) == endpoint:
            return record.to_dict()
    return None


Sizer = Callable[..., "str | None"]   # fn(*input values) -> a size key


def show_cost(engine: Engine, endpoint: str, sized: list[bool], bucket: Sizer | None, size_of: Sizer | None,
              models: Callable[..., list[str]] | None, *values: Any) -> str:
    """The cost line for these input values (page only: never in the API, never an error shown)."""
    try:
        size = size_of(*values) if size_of else request_size(v for v, s in zip(values, sized) if s)
        if size is None:
            return ""
        cost = estimate(engine, endpoint, size, bucket(*values) if bucket else None,
                        models(*values) if models else None)
        return cost_text(cost, last_run(engine, endpoint))
    except Exception:   # a line of advice must never break the page; the log says what went wrong
        log.exception("could not estimate %s", endpoint)
        return ""


def wire(engine: Engine, line: gr.Markdown, endpoint: str, inputs: list, event, bucket: Sizer | None = None,
         size: Sizer | None = None, watch: list | None = None,
         models: Callable[..., list[str]] | None = None) -> None:
    """Keep `line` telling the cost of `endpoint` for the current inputs: on each change of an
    input with a size (or of the `watch` components, where `size(*values)` says the request's
    size from options such as a width and a height), and after each run (`event`, the click).
    `models(*values)`: the models this request uses, where an input chooses them."""
    sized = [isinstance(c, SIZED) for c in inputs]
    update = functools.partial(show_cost, engine, endpoint, sized, bucket, size, models)
    update.__name__ = "show_cost"   # events are found by their function's name (tests, Gradio's own names)
    if watch is None:   # a model picked changes the cost as much as the input does
        watch = [c for c, s in zip(inputs, sized) if s or models is not None]
    for component in watch:
        component.change(update, inputs, line, api_visibility="private", show_progress="hidden",
                         trigger_mode="always_last")
    event.then(update, inputs, line, api_visibility="private", show_progress="hidden")


def as_request(fn: Callable[..., Any], endpoint: str, inputs: list,
               size: Sizer | None = None) -> Callable[..., Any]:
    """fn(engine, *values) run as a request to `endpoint`: the runs and jobs it starts carry the
    endpoint and its inputs' size (engine.runs.Request), so their time is learned for it."""
    sized = [isinstance(c, SIZED) for c in inputs]

    def request(values) -> Request:
        try:
            return Request(endpoint, size(*values) if size else request_size(v for v, s in zip(values, sized) if s))
        except Exception:   # a file the handler itself will refuse, in its own words
            return Request(endpoint)

    if inspect.isgeneratorfunction(fn):
        def within(engine, *values, **kwargs):
            # A generator runs a step at a time, each where Gradio calls it: the request is set per step.
            came = request(values)
            steps = fn(engine, *values, **kwargs)
            while True:
                with came.current():
                    try:
                        step = next(steps)
                    except StopIteration:
                        return
                yield step
    else:
        def within(engine, *values, **kwargs):
            with request(values).current():
                return fn(engine, *values, **kwargs)

    functools.update_wrapper(within, fn)
    del within.__wrapped__
    within.__signature__ = inspect.signature(fn)
    return within


def estimate_request(engine: Engine, endpoint: str, file: str | None = None, text: str = "") -> dict:
    """What a request would need before it runs: memory, time, models to load, models evicted.

    Args:
        endpoint: the API name of the endpoint, e.g. "detect_faces" or "transcribe".
        file: the picture, audio or video the request would send (optional).
        text: the text the request would send, for text endpoints (optional).

    Returns:
        JSON {"endpoint", "size" (the input's size key: "px:921600", "s:12.5", "chars:300"),
        "known" (false until the endpoint has run here once), "models": [{"name", "device",
        "resident", "load_bytes", "run_bytes", "basis", "load_s"}], "need_bytes": {device: bytes},
        "headroom_bytes", "evicts", "verdict" ("now", "evicts", "waits" or "refused"), "reason",
        "seconds" (expected work, loads apart), "load_seconds", "runs_seen", "text" (the line the
        tab shows), "last_run" (the endpoint's last run: predicted against measured, or null)}.
    """
    if not endpoint or not endpoint.strip():
        raise UserFacingError("Name the endpoint to estimate (its API name, e.g. detect_faces).")
    endpoint = endpoint.strip().lstrip("/")
    known = engine.services.get("endpoints")
    if known and endpoint not in known:
        raise UserFacingError(f"There is no endpoint {endpoint!r}. Endpoints: {', '.join(sorted(known))}.")
    size = request_size([file] if file else [text])
    if file and size is None:
        raise UserFacingError("The file could not be read as a picture, a sound or a video: its cost depends on "
                              "its size, so upload one of those.")
    cost = estimate(engine, endpoint, size)
    last = last_run(engine, endpoint)
    return {**cost.to_dict(), "text": cost_text(cost, last), "last_run": last}
