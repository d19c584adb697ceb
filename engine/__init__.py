"""Wimmel's engine: memory, devices, models, leases, OOM recovery and run records. No Gradio here."""
from .core import Call, Engine, Run
from .errors import UserFacingError
from .jobs import JobCancelled, JobContext, JobKind
from .devices import format_bytes, parse_budget, parse_size
from .models import ModelSpec, Registry, pixel_bucket
from .oom import NotEnoughMemory, OutOfMemory, is_oom
from .pool import ModelUnavailable
from .predict import seconds_bucket

__all__ = ["Call", "Engine", "Run", "ModelSpec", "Registry", "pixel_bucket", "seconds_bucket", "OutOfMemory", "is_oom",
           "ModelUnavailable", "NotEnoughMemory", "JobKind", "JobContext", "JobCancelled", "UserFacingError", "format_bytes", "parse_budget", "parse_size"]
