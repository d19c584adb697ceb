"""Engine failures turned into messages a user understands (gr.Error), never tracebacks."""
from __future__ import annotations

import contextlib
import logging

import gradio as gr

from engine import ModelUnavailable, NotEnoughMemory, OutOfMemory

log = logging.getLogger(__name__)


@contextlib.contextmanager
def user_errors(action: str):
    try:
        yield
    except gr.Error:
        raise
    except (NotEnoughMemory, OutOfMemory) as exc:
        raise gr.Error(f"Not enough memory to {action}: {exc}") from exc
    except ModelUnavailable as exc:
        raise gr.Error(f"The model for this could not be loaded. {exc}") from exc
    except Exception as exc:
        log.exception("%s failed", action)
        raise gr.Error(f"Could not {action}: {type(exc).__name__}: {exc}") from exc
