"""Engine failures turned into messages a user understands (gr.Error), never tracebacks."""
from __future__ import annotations

import contextlib
import logging

import gradio as gr

from engine import ModelUnavailable, NotEnoughMemory, OutOfMemory, UserFacingError

log = logging.getLogger(__name__)


SERVER_FAULT = "something went wrong on the server. The details are in its log; trying again or another file may help."


def job_error(job: dict) -> str | None:
    """What a user is told of a failed job: its own plain message, or, where the job failed from
    a bug (job["bug"]), that the server is at fault: no exception text, name or path."""
    return f"It stopped because {SERVER_FAULT}" if job.get("bug") else job.get("error")


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
    except UserFacingError as exc:
        # Our own verdicts (ImageError, MediaError, a job in the wrong state): plain words already.
        raise gr.Error(str(exc), print_exception=False) from exc
    except Exception as exc:
        # A bug, not the user's doing: the traceback goes to the log, the user gets a sentence
        # (no exception names or paths, which mean nothing to them and may show the server's files).
        log.exception("%s failed", action)
        raise gr.Error(f"Could not {action}: {SERVER_FAULT}") from exc
