"""Unix times as the tables show them: local wall-clock text, "" when there is no time."""
from __future__ import annotations

import datetime as dt

CLOCK = "%H:%M:%S"                   # today's events: jobs, runs, warnings
DATE_AND_MINUTE = "%Y-%m-%d %H:%M"   # things kept for days: downloaded models


def local_time(ts: float | None, fmt: str = CLOCK) -> str:
    return dt.datetime.fromtimestamp(ts).strftime(fmt) if ts else ""
