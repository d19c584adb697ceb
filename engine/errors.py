"""The one exception type whose message is written for the user. Everything the engine raises
with a plain-words message (a bad input, an unreadable file, a job in the wrong state) is one of
these, so the UI translates exceptions in one place (ui.errors.user_errors) and shows these
messages as they are."""
from __future__ import annotations


class UserFacingError(Exception):
    """A failure whose message is meant for the user as it is (bad input, unreadable file)."""
