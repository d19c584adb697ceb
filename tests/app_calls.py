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
    bound = handler(engine, fn, action)
    if not inspect.iscoroutinefunction(bound):
        return bound

    def now(*args, **kwargs):
        return asyncio.run(bound(*args, **kwargs))
    return now
