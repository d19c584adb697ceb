"""What every capability's check asks of a request's values, in one place.

An input a user did not give arrives as None (Gradio) or as an empty path (a job's input, the
API); an array of samples or pixels is given whatever its truth value would be.
"""
from __future__ import annotations

import os
from typing import Any


def given(value: Any) -> bool:
    """The input is there: not None, and not an empty path."""
    return value is not None and not (isinstance(value, (str, os.PathLike)) and not os.fspath(value))


def positive(number: Any) -> bool:
    """A number above zero (a sample rate, say), whether given as a number or as text."""
    try:
        return float(number) > 0
    except (TypeError, ValueError):
        return False


def number_from(value: Any, low: float, high: float, what: str, *, default: float,
                error: type[Exception]) -> float:
    """`value` (`default` when not given) as a number from `low` to `high`, both included; else
    `error` (a UserFacingError of the capability) saying so in plain words."""
    try:
        number = float(default if value is None else value)
    except (TypeError, ValueError):
        raise error(f"{value!r} is not a number: give a {what} from {low:g} to {high:g}.") from None
    if not low <= number <= high:
        raise error(f"The {what} must be from {low:g} to {high:g}, not {number:g}.")
    return number
