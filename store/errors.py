"""What can go wrong with a model the user brings. Every one is a user-facing error: its message
says what went wrong and what to do, and it reaches the user as it is."""
from __future__ import annotations

from engine import UserFacingError


class ModelStoreError(UserFacingError):
    """A failure whose message is meant for the user as it is: what went wrong and what to do."""


class Offline(ModelStoreError):
    """No network (HF_HUB_OFFLINE or the host is unreachable); the message says what to fetch."""


class Refused(ModelStoreError):
    """A file Wimmel will not load: pickle checkpoints, non-safetensors single files."""


class ChecksumMismatch(ModelStoreError):
    pass


class DownloadInterrupted(ModelStoreError):
    """The connection dropped; the partial file is kept and the next attempt resumes it."""
