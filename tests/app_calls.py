"""Handlers called from a test the way the app calls them."""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from ui.handlers import handler


def wired(engine, fn: Callable[..., Any], action: str) -> Callable[..., Any]:
    """handler(engine, fn, action), callable from a plain test: the coroutine Gradio would await
    (errors translated, a job the handler queued followed to its outputs) is run to its end; a
    generator handler is returned as it is."""
    return _now(handler(engine, fn, action))


def endpoints(demo) -> dict[str, Callable[..., Any]]:
    """The functions Gradio calls for a built page's API names, callable from a plain test."""
    return {f.api_name: _now(f.fn) for f in demo.fns.values() if f.api_name}


def endpoint(demo, api_name: str) -> Callable[..., Any]:
    return endpoints(demo)[api_name]


def named(demo, name: str) -> Callable[..., Any]:
    """A built page's event function by its handler's name (for those outside the API)."""
    return _now(next(f.fn for f in demo.fns.values() if f.fn is not None and f.fn.__name__ == name))


def _now(fn: Callable[..., Any]) -> Callable[..., Any]:
    if not inspect.iscoroutinefunction(fn):
        return fn
    return lambda *args, **kwargs: asyncio.run(fn(*args, **kwargs))
