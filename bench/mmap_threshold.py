"""mmap-threshold: glibc's mmap threshold fixed at 4 MiB (the engine's default,
engine/measure.fix_mmap_threshold) against glibc's own moving threshold, on every network with a
standard input in bench/networks, side by side.

Each setting runs in fresh child processes (WIMMEL_MMAP_THRESHOLD=4MiB or 0), alternated, PAIRS
of each. A child goes ROUNDS times over every model in a fixed order: load it through the engine,
call it once, time CALLS more calls, unload it; after each round, with every model unloaded and
the heap trimmed, it reads the process's RSS (the floor).

- `<setting>_ms`: per model, the median warm call over every round and child.
- `speed_ratio`: per model, fixed / moving; `median_speed_ratio` over the models (above 1: the
  fixed threshold is slower), `max_speed_ratio`.
- `<setting>_floor_mb`: the floors of one child, round by round (RSS with nothing loaded);
  `<setting>_floor_growth_mb`: median over the children of its last floor less its first (what
  ROUNDS - 1 rounds of loads and unloads left behind).
"""
from __future__ import annotations

import json
import sys
import time

from .common import ROOT, child_json, median, save_series

SETTINGS = {"fixed": "4MiB", "moving": "0"}
PAIRS = 1
ROUNDS = 3
CALLS = 2
MiB = 1 << 20


def child() -> None:
    sys.path.insert(0, str(ROOT))
    import tempfile

    from bench.networks import standard_workloads
    from engine.measure import rss
    from tabs.catalog import build_engine

    work = standard_workloads()
    engine = build_engine(data_dir=tempfile.mkdtemp(prefix="wimmel-bench-mmap-"), store=False)
    times: dict[str, list[float]] = {name: [] for name in work}
    floors = []
    for _ in range(ROUNDS):
        for name, (fn, value) in sorted(work.items()):
            with engine.run(f"mmap {name}") as run:
                fn(run.call, value)   # the load and the first call: not timed
            for _ in range(CALLS):
                with engine.run(f"mmap {name}") as run:
                    started = time.perf_counter()
                    fn(run.call, value)
                    times[name].append(time.perf_counter() - started)
            engine.pool.unload(name)   # collects and trims
        floors.append(rss())
    print(json.dumps({"times": times, "floors": floors}))


def compare(scenario: str, settings: dict[str, dict[str, str]], verbose: bool = True, pairs: int = PAIRS) -> dict:
    """Each setting (environment variables of a fresh child running child() above), `pairs`
    children each, alternated; the speed ratio is the first setting's over the second's."""
    out: dict[str, list[dict]] = {setting: [] for setting in settings}
    for _ in range(pairs):
        for setting, env in settings.items():
            out[setting].append(child_json("bench.mmap_threshold", env=env))
            if verbose:
                print(setting, [round(f / MiB, 1) for f in out[setting][-1]["floors"]], flush=True)
    first, second = list(settings)
    result: dict = {"scenario": scenario, "models": len(out[first][0]["times"])}
    ms = {setting: {name: round(1000 * median([t for child in children for t in child["times"][name]]), 2)
                    for name in children[0]["times"]} for setting, children in out.items()}
    ratio = {name: round(ms[first][name] / ms[second][name], 3) for name in ms[first] if ms[second][name] > 0}
    result.update({"median_speed_ratio": round(median(list(ratio.values())), 3),
                   "max_speed_ratio": max(ratio.values())})
    for setting, children in out.items():
        result[f"{setting}_floor_mb"] = [round(f / MiB, 1) for f in children[0]["floors"]]
        result[f"{setting}_floor_growth_mb"] = round(median([(c["floors"][-1] - c["floors"][0]) / MiB
                                                             for c in children]), 1)
    result["speed_ratio"] = dict(sorted(ratio.items(), key=lambda kv: -kv[1]))
    save_series(scenario, {"ms": ms, "floors": {s: [c["floors"] for c in cs] for s, cs in out.items()}})
    return result


def run(verbose: bool = True) -> dict:
    return compare("mmap-threshold", {setting: {"WIMMEL_MMAP_THRESHOLD": value} for setting, value in SETTINGS.items()},
                   verbose)


if __name__ == "__main__":
    child()
