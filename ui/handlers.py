"""Module-level handlers become Gradio event functions here, and every one of them passes through
the one error translation (ui.errors.user_errors).

A capability's tab writes its handlers as plain functions that take the engine first:

    def detect_faces(engine, image): ...

and wires them with `handler(engine, detect_faces, "detect faces")`. Gradio sees the same name,
docstring and parameters (without `engine`), so the API and its documentation are those of the
function; tests call the function itself, without a browser.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from engine import Engine

from .errors import user_errors


def handler(engine: Engine, fn: Callable[..., Any], action: str) -> Callable[..., Any]:
    """fn(engine, ...) as an event function: the engine bound, exceptions turned into plain
    messages ("Could not <action>: ...", "Not enough memory to <action>: ...")."""
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())[1:]

    if inspect.isgeneratorfunction(fn):
        def bound(*args, **kwargs):
            with user_errors(action):
                yield from fn(engine, *args, **kwargs)
    else:
        def bound(*args, **kwargs):
            with user_errors(action):
                return fn(engine, *args, **kwargs)

    functools.update_wrapper(bound, fn)
    bound.__doc__ = one_line_entries(fn.__doc__)
    del bound.__wrapped__   # inspect.signature must read __signature__, not the engine's parameter
    bound.__signature__ = signature.replace(parameters=parameters)
    return bound


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
