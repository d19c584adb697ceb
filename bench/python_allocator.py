"""python-allocator: Python's objects on glibc's malloc (PYTHONMALLOC=malloc, what launch.py and
the bench's children run with: engine/measure.PROCESS_ENV) against pymalloc (Python's default),
on every network with a standard input in bench/networks, side by side.

The workload is bench mmap-threshold's (bench/mmap_threshold.child): each setting in fresh child
processes, alternated; a child goes ROUNDS times over every model (load, a first call, CALLS
timed calls, unload) and reads RSS with nothing loaded after each round (the floor).

Why: pymalloc keeps small objects in 1 MiB arenas that go back only when wholly empty. Over
200 mixed runs (bench drift's evicting variant) the floor's growth was Python's arenas, one for
one (211 to 225 allocated, 199-200 MiB of live blocks throughout). On malloc they live in the
heap, whose free pages malloc_trim returns.

Fields: `speed_ratio` per model (malloc / pymalloc median warm call; above 1: malloc slower),
`median_speed_ratio`, `max_speed_ratio`; `<setting>_floor_mb` (one child's floors) and
`<setting>_floor_growth_mb` (median over children of the last floor less the first).
"""
from __future__ import annotations

from .mmap_threshold import compare

SETTINGS = {"malloc": {"PYTHONMALLOC": "malloc"}, "pymalloc": {"PYTHONMALLOC": "pymalloc"}}


def run(verbose: bool = True) -> dict:
    return compare("python-allocator", SETTINGS, verbose)
