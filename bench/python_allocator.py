"""python-allocator: Python's objects on glibc's malloc (PYTHONMALLOC=malloc) against pymalloc
(Python's default, what the app runs on), on every network with a standard input in
bench/networks, side by side.

The workload is bench mmap-threshold's (bench/mmap_threshold.child): each setting in PAIRS fresh
child processes, alternated; a child goes ROUNDS times over every model (load, a first call, CALLS
timed calls, unload) and reads RSS with nothing loaded after each round (the floor).

Why: pymalloc keeps small objects in 1 MiB arenas that go back only when wholly empty. Over 200
mixed runs (bench drift's evicting variant) the floor's growth was Python's arenas, one for one
(211 to 225 allocated, 199-200 MiB of live blocks throughout). On malloc the same floor was flat
from the first round, at the level pymalloc reached after four or five (-0.19 and -0.15 % of the
budget against +1.37 and +1.17 %, 861 MiB at the end in all four): a plateau reached sooner, no
memory saved by the end, for calls 5 % slower at the median here. Pymalloc stays.

Fields: `speed_ratio` per model (malloc / pymalloc median warm call; above 1: malloc slower),
`median_speed_ratio`, `max_speed_ratio`; `<setting>_floor_mb` (one child's floors) and
`<setting>_floor_growth_mb` (median over children of the last floor less the first; three rounds
in a fixed order: this figure moved by 10 MiB from run to run, bench drift's floors did not).
"""
from __future__ import annotations

from .mmap_threshold import compare

SETTINGS = {"malloc": {"PYTHONMALLOC": "malloc"}, "pymalloc": {"PYTHONMALLOC": "pymalloc"}}
PAIRS = 2   # one child each read 1.03 and then 1.12 as the median speed ratio


def run(verbose: bool = True) -> dict:
    return compare("python-allocator", SETTINGS, verbose, pairs=PAIRS)
