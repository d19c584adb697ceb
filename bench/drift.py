"""drift: does the process give back what each run took? 200 mixed runs, one at a time (issue 16,
"free after each task": drift under 1 % of the budget once warm).

1. A learning child runs every model with a standard input in bench/networks once, alone, so its
   footprint is measured and saved (as bench/oom_stress.py does).
2. Each variant runs in a fresh child with a copy of those footprints: RUNS runs in one seeded
   random order, one at a time, each the model's standard call (bench.networks._standard) in a
   run of the engine. The order is shuffled rounds (every model once per round, the round's order
   random), so that all models are warm early and each has the same number of runs.
   - evicting: budget 60 % of the summed footprints (the load bytes the engine measured; at
     least the largest model's load + run peak, so every run can be admitted): models are
     evicted and reloaded all along, the realistic mixed case. (oom-stress's 60 % of load + run
     peak evicted nothing here on the ledger-only pool: one run at a time reserves one run peak,
     and a first try with it loaded each model once.)
   - resident: every load and run peak summed, plus 1 GiB for what the process holds beyond the
     ledger (the pool counts that against the budget too): every model stays loaded, so what
     grows is the runs' own.
   - evicting-trim: as evicting, with release_cached_memory() (gc + malloc_trim) after every run.
3. After every run: the process's RSS (and its anonymous and file-backed parts, /proc/self/status),
   glibc's heap in use (engine.measure.heap_in_use) and the pool's ledger (engine_bytes('cpu')).
   In the evicting variants, after each round (every model once) every model is also unloaded and
   RSS read: the floor, what the process holds that no loaded model explains. RSS after each run
   swings by the models that happen to be loaded (the slope's se is several % of the budget);
   the floor does not, so it shows what the runs fail to give back.

Fields per variant: warm_from (the index of the run after which every model had run twice; the
warm part is the runs after it), rss_* and heap_* in MiB: at warm, at the end, the least-squares
slope over the warm part (MiB per 100 runs) with its standard error (se; a lower bound: samples
are correlated), the fitted growth over the warm runs and that growth as % of the budget
(drift_pct; the goal is < 1); nonheap_* the same for RSS less the heap in use (what no live block
explains: allocator caches, fragmentation, Python's arenas, mapped files); anon_*, file_* the
slope of RSS's anonymous and file-backed parts; gap_*: RSS above its level before the first run
minus the ledger (median, max): what the process holds that the pool does not count; loads (runs
that loaded a model); per_model_rss_delta_mb: per model, the median RSS change across its warm
runs (a model that leaks shows up here, in the resident variant most clearly; the 6 largest by
size); unledgered_first_run_mb: per model, RSS growth less ledger growth over its first run (load
and run): what it left that the pool does not count (the 6 largest; all of them in the series,
beside each model's learned run peak); floor_mb (the warm floors), floor_growth_mb (a line
through them, over the warm runs) and floor_drift_pct (that growth as % of the budget).
"""
from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT, child_json, rss_parts, save_series
from .oom_stress import _workloads, learn as learn_footprints

RUNS = 200
SEED = 16
WARM_AFTER = 2          # runs per model before the process counts as warm
VARIANTS = {"evicting": (0.60, False), "resident": (None, False), "evicting-trim": (0.60, True)}
GiB = 2**30
MiB = 2**20


def learn(folder: str, models: str = "") -> None:
    """Run each workload once, alone, learning footprints into folder/data (oom_stress.learn's)."""
    learn_footprints(folder, "cpu", models)


# ------------------------------------------------------------------------------ the numbers

def fit(ys: list[float]) -> tuple[float, float]:
    """Least-squares line through (i, ys[i]): (slope per step, intercept)."""
    n = len(ys)
    if n < 2:
        return 0.0, float(ys[0]) if ys else 0.0
    mx, my = (n - 1) / 2, statistics.fmean(ys)
    sxx = sum((i - mx) ** 2 for i in range(n))
    slope = sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sxx
    return slope, my - slope * mx


def slope_error(ys: list[float], slope: float, intercept: float) -> float:
    """The slope's standard error from the residuals (optimistic where successive samples are
    correlated, as RSS after eviction and reload is: read it as a lower bound)."""
    n = len(ys)
    if n < 3:
        return 0.0
    residual = sum((y - intercept - slope * i) ** 2 for i, y in enumerate(ys)) / (n - 2)
    return (residual / sum((i - (n - 1) / 2) ** 2 for i in range(n))) ** 0.5


def warm_index(order: list[str], times: int = WARM_AFTER) -> int:
    """The index of the run after which every model in `order` had run `times` times."""
    seen: dict[str, int] = {}
    models = set(order)
    for i, name in enumerate(order):
        seen[name] = seen.get(name, 0) + 1
        if len(seen) == len(models) and min(seen.values()) >= times:
            return i
    return len(order) - 1


def _top(values: dict[str, float], n: int = 6) -> dict[str, float]:
    return dict(sorted(values.items(), key=lambda kv: -abs(kv[1]))[:n])


def summarise(order: list[str], samples: dict[str, list], start_rss: int, budget: int,
              floors: list[tuple[int, int]] = ()) -> dict:
    """The report's fields from per-run samples in bytes (sample i is taken after run i):
    samples has 'rss', 'heap', 'anon', 'file' and 'ledger'; floors, (i, RSS) with every model
    unloaded after run i."""
    warm = warm_index(order)
    out = {"warm_from": warm, "warm_runs": len(order) - 1 - warm}
    warm_floors = [(i, value / MiB) for i, value in floors if i >= warm]
    if len(warm_floors) >= 2:
        # A line through the floors (one per round, evenly spaced) against the run index, over
        # the same warm runs as the rest.
        xs, ys = zip(*warm_floors)
        growth = fit(list(ys))[0] / (xs[1] - xs[0]) * (len(order) - 1 - warm)
        out.update({"floor_mb": [round(y, 1) for y in ys], "floor_growth_mb": round(growth, 1),
                    "floor_drift_pct": round(100 * growth * MiB / budget, 2)})
    # nonheap: RSS less glibc's heap in use, i.e. what no live malloc block explains (free memory
    # the allocators keep, fragmentation, Python's own arenas, mapped files): eviction's sawtooth
    # moves live memory, so this is where a leak of caches shows through it.
    heap = samples["heap"]
    nonheap = None if None in heap else [r - h for r, h in zip(samples["rss"], heap)]
    for key, values in (("rss", samples["rss"]), ("heap", heap), ("nonheap", nonheap), ("anon", samples["anon"]),
                        ("file", samples["file"])):
        if values is None or None in values:
            continue
        part = [v / MiB for v in values[warm:]]   # the warm part, from the sample that ends warm-up
        slope, intercept = fit(part)
        growth = slope * (len(part) - 1)
        if key in ("rss", "heap"):
            out.update({f"{key}_warm_mb": round(part[0], 1), f"{key}_end_mb": round(part[-1], 1)})
        out.update({f"{key}_slope_mb_per_100": round(slope * 100, 2), f"{key}_growth_mb": round(growth, 1)})
        if key in ("rss", "heap", "nonheap"):
            out[f"{key}_slope_se_mb_per_100"] = round(slope_error(part, slope, intercept) * 100, 2)
            out[f"{key}_drift_pct"] = round(100 * growth * MiB / budget, 2)
    rss, ledger = samples["rss"], samples["ledger"]
    gaps = [(r - start_rss - held) / MiB for r, held in zip(rss, ledger)]
    out.update({"gap_median_mb": round(statistics.median(gaps), 1), "gap_max_mb": round(max(gaps), 1),
                "rss_max_above_start_mb": round((max(rss) - start_rss) / MiB, 1)})
    deltas: dict[str, list[float]] = {}
    for i in range(warm + 1, len(order)):
        deltas.setdefault(order[i], []).append((rss[i] - rss[i - 1]) / MiB)
    out["per_model_rss_delta_mb"] = {m: round(statistics.median(d), 1) for m, d in sorted(deltas.items())}
    kept: dict[str, float] = {}
    for i, name in enumerate(order):
        if name not in kept:
            before_rss, before_ledger = (rss[i - 1], ledger[i - 1]) if i else (start_rss, 0)
            kept[name] = round(((rss[i] - before_rss) - (ledger[i] - before_ledger)) / MiB, 1)
    out["unledgered_first_run_mb"] = dict(sorted(kept.items()))
    return out


def make_order(models: list[str], runs: int, seed: int) -> list[str]:
    """Shuffled rounds: each model once per round, in a new random order each round."""
    rng, order = random.Random(seed), []
    while len(order) < runs:
        round_ = sorted(models)
        rng.shuffle(round_)
        order += round_
    return order[:runs]


# ------------------------------------------------------------------------------ one variant

def child(folder: str, variant: str, runs: str = str(RUNS), models: str = "") -> None:
    sys.path.insert(0, str(ROOT))
    from engine.measure import heap_in_use, rss
    from engine.models import FootprintStore
    from engine.runtimes.torch_runtime import release_cached_memory
    from tabs.catalog import build_engine, default_specs

    share, trim = VARIANTS[variant]
    folder = Path(folder)
    work = _workloads(models.split(",") if models else None)
    specs = {s.name: s for s in default_specs()}
    store = FootprintStore(folder / "data" / "footprints.json")
    load = {m: store.load_bytes(specs[m], "cpu") for m in work}
    peak = {m: max(store.get(m, "cpu").run_peak_bytes.values(), default=0) for m in work}
    if share is None:
        # Room for every model and every run peak at once, and 1 GiB for what the process holds
        # beyond the ledger (arenas, imports), which the pool counts against the budget too.
        budget = sum(load.values()) + sum(peak.values()) + GiB
    else:
        budget = int(max(share * sum(load.values()), max(load[m] + peak[m] for m in work)))
    order = make_order(sorted(work), int(runs), SEED)
    engine = build_engine(data_dir=folder / "data", budget=f"cpu={budget}", store=False)
    start_rss, start_heap = rss(), heap_in_use()
    samples = {k: [] for k in ("rss", "heap", "anon", "file", "ledger")}
    loads, started, floors = 0, time.perf_counter(), []
    for i, name in enumerate(order):
        fn, value = work[name]
        with engine.run(f"drift {name}") as run:
            fn(run.call, value)
        loads += run.record.load_s > 0
        if trim:
            release_cached_memory()
        anon, file = rss_parts()
        for key, value in (("rss", rss()), ("heap", heap_in_use()), ("anon", anon), ("file", file),
                           ("ledger", engine.pool.engine_bytes("cpu"))):
            samples[key].append(value)
        if share is not None and (i + 1) % len(work) == 0:
            # The floor: every model unloaded at the end of a round (they are reloaded all along
            # here anyway). What the process holds then is what no loaded model explains.
            for model in engine.pool.loaded_models():
                engine.pool.unload(model)
            floors.append((i, rss()))
    fields = summarise(order, samples, start_rss, budget, floors)
    mb = lambda values: [None if v is None else round(v / MiB, 1) for v in values]  # noqa: E731
    result = {"variant": variant, "budget_mb": round(budget / MiB, 1), "runs": len(order), "models": len(work),
              "loads": loads, "start_rss_mb": round(start_rss / MiB, 1),
              "start_heap_mb": None if start_heap is None else round(start_heap / MiB, 1), **fields,
              "seconds": round(time.perf_counter() - started, 1),
              "series": {"order": order, **{f"{k}_mb": mb(v) for k, v in samples.items()},
                         "run_peak_mb": {m: round(v / MiB, 1) for m, v in sorted(peak.items())},
                         "load_mb": {m: round(v / MiB, 1) for m, v in sorted(load.items())}}}
    print(json.dumps(result))


# ------------------------------------------------------------------------------ the scenario

def run(verbose: bool = True, variants: tuple[str, ...] = tuple(VARIANTS), runs: int = RUNS,
        models: str = "") -> dict:
    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-drift-"))
    learned = child_json("bench.drift", "learn", str(folder / "learn"), models)
    if verbose:
        print(f"footprints learned for {len(learned['models'])} models", flush=True)
    result, series = {"scenario": "drift", "runs": runs, "models": len(learned["models"])}, {}
    for variant in variants:
        # Each variant starts from the same learned footprints, not from another variant's.
        shutil.copytree(folder / "learn" / "data", folder / variant / "data")
        fields = child_json("bench.drift", "child", str(folder / variant), variant, str(runs), models)
        series[variant] = fields.pop("series")
        for key in ("start_rss_mb", "budget_mb", "per_model_rss_delta_mb", "unledgered_first_run_mb"):
            series[variant][key] = fields[key]
        for key in ("per_model_rss_delta_mb", "unledgered_first_run_mb"):
            fields[key] = _top(fields[key])
        result["warm_from"], result["warm_runs"] = fields.pop("warm_from"), fields.pop("warm_runs")
        for key in ("variant", "runs", "models"):
            fields.pop(key)
        # Flat fields, one per row of the page's table: 'evicting.rss_drift_pct'.
        result.update({f"{variant}.{k}": v for k, v in fields.items()})
        if verbose:
            print(f"{variant}: {fields}", flush=True)
    save_series("drift", series)
    return result


if __name__ == "__main__":
    {"learn": learn, "child": child}[sys.argv[1]](*sys.argv[2:])
