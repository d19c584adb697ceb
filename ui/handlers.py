"""Module-level handlers become Gradio event functions here, and every one of them passes through
the one error translation (ui.errors.user_errors).

A capability's tab writes its handlers as plain functions that take the engine first:

    def detect_faces(engine, image): ...

and wires them with `handler(engine, detect_faces, "detect faces")`. Gradio sees the same name,
docstring and parameters (without `engine`), so the API and its documentation are those of the
function; tests call the function itself, without a browser. A plain function becomes a
coroutine (it runs in a worker thread; a job it queued is followed without one, ui.jobs), a
generator stays a generator.

Each call runs as its user (ui.users.current_user): the wrapper takes one more parameter, a
gr.Request (named _wimmel_request so it never meets a handler's own), that Gradio fills in
itself and leaves out of the API.
"""
from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable

import anyio
import gradio as gr

from engine import Engine

from . import users
from .errors import user_errors
from .jobs import JobStarted, follow_job

REQUEST = "_wimmel_request"   # a name no handler's own parameter takes


def handler(engine: Engine, fn: Callable[..., Any], action: str) -> Callable[..., Any]:
    """fn(engine, ...) as an event function: the engine bound, exceptions turned into plain
    messages ("Could not <action>: ...", "Not enough memory to <action>: ...")."""
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())[1:]
    # Gradio passes the request at this parameter's position: after the positional parameters.
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    at = next((i for i, p in enumerate(parameters) if p.kind not in positional), len(parameters))

    def split(args, kwargs):
        """(user, args, kwargs) of a call: Gradio's request taken out; direct calls (tests) have none."""
        request = kwargs.pop(REQUEST, None)
        if len(args) > at:
            request, args = args[at], args[:at] + args[at + 1:]
        return users.user_of(request), args, kwargs

    if inspect.isgeneratorfunction(fn):
        def bound(*args, **kwargs):
            user, args, kwargs = split(args, kwargs)
            with user_errors(action):
                # Gradio runs each step of a generator in a context of its own: the user is set
                # for each step, not once around them all.
                steps = fn(engine, *args, **kwargs)
                try:
                    while True:
                        with users.acting_as(user):
                            try:
                                item = next(steps)
                            except StopIteration as stop:
                                return stop.value
                        yield item
                finally:
                    steps.close()
    else:
        # A coroutine for Gradio: fn runs in a worker thread as before, but a job it started is
        # followed on the event loop (ui.jobs), so waiting on the queue holds no thread.
        async def bound(*args, **kwargs):
            user, args, kwargs = split(args, kwargs)
            with user_errors(action), users.acting_as(user):
                # anyio's default limiter: at most 40 handler threads, however many events Gradio
                # lets run at once (app.EVENTS_AT_ONCE).
                outcome = await anyio.to_thread.run_sync(functools.partial(fn, engine, *args, **kwargs))
                if isinstance(outcome, JobStarted):
                    outcome = await follow_job(engine, outcome)
                return outcome

    functools.update_wrapper(bound, fn)
    bound.__doc__ = one_line_entries(fn.__doc__)
    del bound.__wrapped__   # inspect.signature must read __signature__, not the engine's parameter
    request = inspect.Parameter(REQUEST, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                annotation=gr.Request)
    bound.__signature__ = signature.replace(parameters=[*parameters[:at], request, *parameters[at:]])
    # Gradio reads the annotations through typing.get_type_hints(bound), in this module's globals:
    # they are resolved here in fn's, or the request (and a gr.SelectData) would go unseen.
    names = (*bound.__signature__.parameters, "return")
    hints = {name: hint for name, hint in _hints(fn).items() if name in names}
    bound.__annotations__ = {**hints, REQUEST: gr.Request}
    return bound


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):   # one unresolvable annotation: keep those that are not strings
        hints = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)}
    return hints


_SECTIONS = ("Args:", "Parameters:", "Arguments:", "Returns:")


def one_line_entries(doc: str | None) -> str | None:
    """Gradio reads one line per Args entry and per Returns line (the API page, MCP tool schemas):
    each entry's wrapped lines are joined onto it, and the Returns paragraph into one line, or
    the descriptions end mid-sentence there."""
    if not doc:
        return doc
    out, section, indent = [], None, None
    for line in inspect.cleandoc(doc).splitlines():
        text, depth = line.strip(), len(line) - len(line.lstrip())
        if text in _SECTIONS:
            section, indent = text, None
        elif section and text:
            indent = depth if indent is None else indent
            if out and out[-1].strip() not in ("", *_SECTIONS) and (section == "Returns:" or depth > indent):
                out[-1] += " " + text
                continue
        out.append(line)
    return "\n".join(out)
