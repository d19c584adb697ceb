"""`python -m bench all`: run every scenario in its own process, then write docs/benchmarks.md.

Each scenario runs as `python -m bench NAME` in a fresh process (memory figures need a clean
process; a crash costs one scenario, not the page). Its progress lines are echoed, its last line
is its JSON. Series for plots land in docs/benchmarks/series/NAME.json; the fields of the whole run
in docs/benchmarks/results.json, from which `python -m bench report` redraws the page and plots.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import mmap_threshold, networks, plot, python_allocator
from .goals import SERIES, fields_of as _f, goals as _goals, series as _series
from .common import ROOT, machine

ALL = ["swap", "grouping", "interactive", "video-memory", "estimate", "overhead", "startup", "oom-stress", "load",
       "networks", "drift", "cluster", "onnx-arena", "mmap-threshold", "python-allocator"]
TAKES_BUDGET = ("interactive", "load")
PAGE = ROOT / "docs" / "benchmarks.md"
ASSETS = ROOT / "docs" / "benchmarks"
RESULTS = ASSETS / "results.json"

DESCRIPTIONS = {
    "swap": ("bench/swap.py", "A 256 MiB torch model in safetensors, warm page cache, median of 5, the three ways "
             "interleaved. Raw floor: reading the file's bytes into a buffer. Engine: from the pool's load request to the "
             "first output, minus that forward on the resident model. Naive: build the module (default initialisation), "
             "`load_state_dict` from the file, first output, minus the same forward. The engine's loaders build the "
             "module on the meta device and assign the safetensors tensors, which are memory-mapped: their pages are "
             "mapped from the page cache, not copied, so on a warm cache the engine beats the raw read (cold, both wait "
             "for the disk). `restore_s` is null: the pool parks no evicted model in RAM (on a CPU-only machine RAM is "
             "the device), so an evicted model comes back from its file in `engine_load_s`."),
    "grouping": ("bench/grouping.py", "30 jobs over 3 torch models of 256 MiB in one seeded order, a budget that holds one "
                 "model. First-in-first-out and the grouped scheduler are the engine's job queue; the seed article's "
                 "method starts each job as its own task after a random delay and retries after a random delay on "
                 "out-of-memory, delays scaled to the measured job duration (the article's own delay values are not "
                 "in this repository: here the delay between starts is uniform in 0-1 x a job's duration and the "
                 "wait after an out-of-memory in 0.5-2 x). Medians of 3."),
    "interactive": ("bench/interactive.py", "The real app in a subprocess; `detect_faces` on a 512 px photo through "
                    "gradio_client, 30 calls idle, then 30 while the face anonymiser runs a 720p video job; "
                    "`job_fps` is the job's speed meanwhile. Twice, side by side: with job threads at the same "
                    "priority as the rest (`--job-nice 0`, fields under `same_priority`), then at the default "
                    "(`--job-nice 10`, the other fields)."),
    "video-memory": ("bench/video.py", "The face anonymiser job on a 10 s and a 120 s 1280x720 video, each in a fresh "
                     "process (peak RSS: VmHWM and 0.1 s samples); the ceiling is the same job path with no model. "
                     "10 frames per second, so that the 120 s video's 1,200 frames fit the run."),
    "estimate": ("bench/estimate.py", "Vision, speech and text models at several input sizes in random order, half "
                 "with the model unloaded first; the engine's prediction (learned footprints, read before the run) against the peak RSS "
                 "the run added. `restart`: the same in another order in a second process, on the footprints the first learned."),
    "overhead": ("bench/overhead.py", "A 16x16 linear layer called directly vs through `engine.infer` (run record, "
                 "lease, memory probe, OOM guard); 15 interleaved blocks of 200 calls, medians of block means."),
    "startup": ("bench/startup.py", "`launch.py` with a fresh data dir: time to the first HTTP 200, and to the first "
                "`detect_faces` answer through gradio_client. Median of 3."),
    "oom-stress": ("bench/oom_stress.py", "Every model with a standard input in bench/networks (all the engine "
                   "serves), footprints learned in a first process; then 100 jobs in random order, 3 at a time, under a budget of 60 % of the footprints' sum, with real "
                   "allocation failures injected in 10 % of the runs (during the load, before or after the model's call)."),
    "load": ("bench/load.py", "Issue 18's load test: the real app (`--budget`, `--auth-file` with 5 logins and an admin) "
             "in one process, two phases side by side: 16 gradio_client clients for 120 s, then 50. Each client has its "
             "own login (round-robin over the users); a third of them (rounded down: 5, 16) submit blur_faces_video "
             "and stylize_video jobs one after another, the rest go round detect_faces, nsfw_check, ocr, speak and "
             "detect_speech with 1-3 s of think time; every job under way is waited for. Fields are the 50-client "
             "phase's, `_16` the 16-client one's; `interactive_p95_ratio` = p95 of all interactive calls at 50 / at 16; "
             "`jobs_per_user` counts done jobs per owner (admin's list_jobs), `share_ratio` its largest / smallest; "
             "threads: the server's `Threads:` idle before the phase and sampled every 0.25 s during it. "
             "`peak_rss_mb` is the whole server process against `--budget`; ffmpeg children (`peak_tree_mb`) are "
             "outside the engine's accounting. Clients wait up to 120 s per HTTP exchange."),
    "networks": ("bench/networks.py", "Every model of the catalog (tabs.catalog.default_specs()), each in a fresh process: "
                 "cold and median-of-3 load through the pool, the engine's measured footprint and run peak, latency of "
                 "the capability's own function on a standard input (512 px photo, a sentence, 5 s of Piper speech), "
                 "median of 5 after a warm-up; a model without a standard input yet is listed with load and footprint "
                 "only."),
    "drift": ("bench/drift.py", "Issue 16's drift: every model with a standard input in bench/networks, footprints "
              "learned in a first process; then 200 runs one at a time in a seeded order (shuffled rounds: each model "
              "once per round), each variant in a fresh process: `evicting` under 60 % of the footprints' sum (models "
              "evicted and reloaded), `resident` under all loads and run peaks + 1 GiB (all stay loaded: the runs' own drift), "
              "`evicting-trim` as evicting with gc + `malloc_trim` after every run. RSS, glibc heap in use and the "
              "pool's ledger after every run; warm from `warm_from` (every model has run twice); slopes are least "
              "squares over the warm runs, drift_pct the fitted growth over them as % of the budget (goal < 1). "
              "In the evicting variants every model is also unloaded after each round and RSS read: `floor_mb`, "
              "and its line's growth over the warm runs, `floor_drift_pct`."),
    "onnx-arena": ("bench/onnx_arena.py", "Issue 16: ONNX Runtime's CPU arena kept (the engine's default), shrunk after each "
                   "run, or off, all three without ONNX Runtime's memory pattern, and `pattern`: kept, with the "
                   "pattern (ONNX Runtime's own default); each in a fresh process with glibc's mmap threshold fixed as "
                   "in the app (4 MiB): the style preset network at five "
                   "sizes and the NSFW classifier at batches 1 and 4, 4 rounds, every other one in reverse order; heap "
                   "trimmed and peak-RSS mark reset before each call. Peaks are listed round by round: the first is "
                   "the first run at that size."),
    "mmap-threshold": ("bench/mmap_threshold.py", "Issue 16: glibc's mmap threshold fixed at 4 MiB (the engine's "
                       "default, engine/measure.fix_mmap_threshold) against glibc's moving one, each in a fresh "
                       f"process: {mmap_threshold.ROUNDS} rounds over every network with a standard input, each "
                       f"loaded, called once, called {mmap_threshold.CALLS} times more timed, and unloaded; after "
                       "each round, with nothing loaded and the heap "
                       "trimmed, the process's RSS (the floor). `speed_ratio`: fixed / moving median call time per "
                       "model."),
    "python-allocator": ("bench/python_allocator.py", "Issue 16: Python's objects on glibc's malloc "
                         "(PYTHONMALLOC=malloc) against pymalloc (Python's default, the app's), "
                         f"{python_allocator.PAIRS} fresh processes each, alternated, on bench mmap-threshold's "
                         f"workload ({mmap_threshold.ROUNDS} rounds over every network, "
                         "each loaded, called, timed, unloaded; the floor after each round). `speed_ratio`: malloc "
                         "/ pymalloc median call time per model."),
    "cluster": ("bench/cluster.py", "Issue 17: a local Ray cluster, 24 chunked jobs over 3 torch models, each job "
                "leasing its model per chunk. Side by side in one run: one worker; two workers routed by model "
                "(a job goes to the free worker that holds its model); two workers round-robin; two workers by "
                "model with one worker's process killed mid-job (the job resumes on a worker from its last "
                "checkpointed chunk). loads_*: model loads counted by the workers' engines; lost: jobs that did "
                "not finish; makespans are single runs on a shared machine: read them as ratios."),
}


# ------------------------------------------------------------------------------ running

def _run_one(name: str, budget: str | None) -> dict:
    cmd = [sys.executable, "-m", "bench", name]
    if budget and name in TAKES_BUDGET:
        cmd += ["--budget", budget]
    started = time.perf_counter()
    log = Path(tempfile.gettempdir()) / "wimmel-bench-logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "WIMMEL_BENCH_SERIES": str(SERIES)})
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.strip():
                last = line
                if not line.startswith("{"):
                    print(f"[{name}] {line}", flush=True)
        proc.wait()
    seconds = round(time.perf_counter() - started, 1)
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    try:
        fields = json.loads(last)
        if proc.returncode != 0:
            raise ValueError
    except ValueError:
        tail = log.read_text(errors="replace").strip().splitlines()[-8:]
        return {"seconds": seconds, "date": date, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return {"seconds": seconds, "date": date, "fields": fields}


def run_all(budget: str | None = None, only: list[str] | None = None) -> dict:
    names = only or ALL
    unknown = set(names) - set(ALL)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; all: {ALL}")
    results = {"scenarios": {}}
    if only and RESULTS.exists():
        results = json.loads(RESULTS.read_text())  # keep the other scenarios' last figures
    results["machine"] = machine()
    results["budget"] = budget
    # Every --only run since the last full run is named, not only this one's.
    results["rerun"] = list(dict.fromkeys(results.get("rerun", []) + names)) if only else []
    results["note"] = (f"Scenarios {', '.join(results['rerun'])} rerun with --only; the others are from the last "
                       "full run." if only else "")
    started = time.perf_counter()
    for name in names:
        print(f"== {name}", flush=True)
        results["scenarios"][name] = _run_one(name, budget)
        outcome = results["scenarios"][name]
        print(f"== {name}: {outcome['seconds']} s" + (f", FAILED {outcome['error']}" if "error" in outcome else ""),
              flush=True)
        results["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        results["total_s"] = round(time.perf_counter() - started, 1) if not only else results.get("total_s")
        ASSETS.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))
    if not only:
        results["total_s"] = round(time.perf_counter() - started, 1)
        RESULTS.write_text(json.dumps(results, indent=1))
    write_page(results)
    return {name: r.get("fields", {"error": r.get("error")}) for name, r in results["scenarios"].items()}


def redraw() -> dict:
    results = json.loads(RESULTS.read_text())
    write_page(results)
    return {"page": str(PAGE.relative_to(ROOT)), "scenarios": sorted(results["scenarios"])}


# ------------------------------------------------------------------------------ goals

def _notes(results: dict) -> dict[str, list[str]]:
    """Observations under a scenario's table, computed from its figures."""
    notes: dict[str, list[str]] = {}
    g = _f(results, "grouping")
    if g and g["loads_fifo"] > g["loads_grouped"]:
        per_swap = (g["makespan_fifo_s"] - g["makespan_grouped_s"]) / (g["loads_fifo"] - g["loads_grouped"])
        notes["grouping"] = [
            f"Each load FIFO repeats costs about {per_swap:.2f} s of makespan in the engine's queue, against "
            f"{g['load_s']} s for the loader alone: the eviction before it runs `malloc_trim` (and `gc.collect()` "
            "when dropping the model did not free it; engine/runtimes/torch_runtime.py release_cached_memory) so "
            "that the freed memory shows as free, "
            "and the load measures and records its footprint. The seed's tasks skip all of that (and any "
            "admission: they find out by failing, "
            f"{g.get('oom_retries_seed', '?')} out-of-memory retries), which is why its "
            f"{g['loads_seed']} loads cost less than FIFO's {g['loads_fifo']}."]
    return notes


# ------------------------------------------------------------------------------ page

def _plots(results: dict) -> dict[str, list[str]]:
    """Draw what the series allow; scenario -> relative PNG paths."""
    out: dict[str, list[str]] = {}

    def add(name, filename, draw):
        try:
            draw(ASSETS / filename)
            out.setdefault(name, []).append(f"benchmarks/{filename}")
        except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn is left out, with a line
            print(f"plot {filename}: {type(exc).__name__}: {exc}", flush=True)

    s, f = _series("swap"), _f(results, "swap")
    if f:
        add("swap", "swap.png", lambda p: plot.bars(p, "Bringing a 256 MiB model into memory (median)", "seconds",
                                                    {"raw read (floor)": f["raw_read_s"], "engine load": f["engine_load_s"],
                                                     "naive load": f["naive_load_s"]}))
    f = _f(results, "grouping")
    if f:
        add("grouping", "grouping.png", lambda p: plot.bars(p, "30 jobs over 3 models: makespan (median of 3)", "seconds",
                                                            {f"FIFO ({f['loads_fifo']} loads)": f["makespan_fifo_s"],
                                                             f"grouped ({f['loads_grouped']} loads)": f["makespan_grouped_s"],
                                                             f"seed ({f['loads_seed']} loads)": f["makespan_seed_s"]}))
    s = _series("interactive")
    if s:
        add("interactive", "interactive.png", lambda p: plot.boxes(
            p, "detect_faces over HTTP: latency", "milliseconds",
            {"idle": s["idle_ms"], "while a video job runs": s["busy_ms"],
             **({"the job at the same priority": s["same_priority_busy_ms"]} if "same_priority_busy_ms" in s else {})}))
    s = _series("video-memory")
    if s:
        names = {"10s": "10 s video", "120s": "120 s video", "ceiling": "10 s, no model (ceiling)"}
        add("video-memory", "video-memory.png", lambda p: plot.line(
            p, "Face anonymiser on 720p: RSS of the job's process", "seconds", "MiB",
            [(names.get(k, k), [t for t, _ in v], [m for _, m in v]) for k, v in s["rss_over_time"].items()]))
    s = _series("estimate")
    if s:
        models = sorted({r["model"] for r in s["rows"]})
        add("estimate", "estimate.png", lambda p: plot.scatter(
            p, "Predicted vs measured peak per run", "predicted (MiB)", "measured (MiB)",
            [(m, [r["predicted_mb"] for r in s["rows"] if r["model"] == m],
              [r["measured_mb"] for r in s["rows"] if r["model"] == m]) for m in models]))
    s = _series("overhead")
    if s:
        add("overhead", "overhead.png", lambda p: plot.boxes(
            p, "Per-call time of a tiny model (block means)", "microseconds",
            {"direct": s["direct_us"], "engine.infer": s["engine_us"]}, log=True))
    s = _series("startup")
    if s:
        add("startup", "startup.png", lambda p: plot.boxes(
            p, "launch.py start to ...", "seconds", {"first page": s["first_page_s"], "first answer": s["first_answer_s"]}))
    s = _series("oom-stress")
    if s:
        add("oom-stress", "oom-stress.png", lambda p: plot.line(
            p, "oom-stress: memory over time", "seconds", "MiB",
            [("process RSS above its start", [r[0] for r in s["memory"]], [r[1] for r in s["memory"]]),
             ("pool's accounting", [r[0] for r in s["memory"]], [r[2] for r in s["memory"]])],
            hlines=[("budget", s["budget_mb"])]))
    s = _series("load")
    if s:
        add("load", "load-latency.png", lambda p: plot.boxes(
            p, "load: latency per endpoint (50 clients)", "milliseconds (log)", s["latencies_ms"], log=True))
        series = [("server process RSS", s["memory"]["t"], s["memory"]["process_mb"]),
                  ("with its ffmpeg children", s["memory"]["t"], s["memory"]["mb"])]
        if s.get("engine"):
            series.append(("engine's resident models", [t for t, _ in s["engine"]], [v for _, v in s["engine"]]))
        add("load", "load-memory.png", lambda p: plot.line(p, "load: memory over time", "seconds", "MiB", series,
                                                           hlines=[("budget", s["budget_mb"])]))
    s = _series("drift")
    if s and "evicting" in s:
        lines = [(f"{v}: RSS", list(range(len(d["rss_mb"]))),
                  [r - d["start_rss_mb"] for r in d["rss_mb"]]) for v, d in s.items()]
        ledger = s["evicting"]["ledger_mb"]
        lines.append(("evicting: ledger", list(range(len(ledger))), ledger))
        add("drift", "drift.png", lambda p: plot.line(p, "drift: RSS above its start and the pool's ledger after each "
                                                      "run", "run", "MiB", lines,
                                                      hlines=[("evicting's budget", s["evicting"]["budget_mb"])]))
    return out


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value)[:300].replace("|", "\\|") + "`"
    return str(value).replace("|", "\\|")


def write_page(results: dict) -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    plots = _plots(results)
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench all` on {results.get('date', '?')}"
        + (f" in {results['total_s'] / 60:.1f} minutes" if results.get("total_s") else "") + ". "
        "Every scenario ran in its own process on the machine below; each figure compares things measured side "
        "by side in that run, medians over repeats. These machines are shared and noisy: read ratios, not "
        "absolute times, and nothing here is asserted by a test. Regenerate with `python -m bench all "
        "[--budget cpu=4GiB]` (about 25 minutes on two cores); redraw this page from the saved figures "
        "(`docs/benchmarks/results.json`, `docs/benchmarks/series/`) with `python -m bench report`; one scenario: "
        "`python -m bench NAME --json`." + (f" {results['note']}" if results.get("note") else ""),
        "",
        "## Machine",
        "",
        "| CPU | cores | RAM | Python | torch | onnxruntime | gradio | numpy | GPU | plots |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {m.get('cpu')} | {m.get('cores')} (torch threads {m.get('torch_threads')}) | {m.get('ram_gib')} GiB | "
        f"{m.get('python')} | {m.get('torch')} | {m.get('onnxruntime')} | {m.get('gradio')} | {m.get('numpy')} | "
        f"{m.get('cuda') or 'none'} | {plot.backend()} |",
        "",
        "## Goals",
        "",
        "| goal | measured | holds | why not |",
        "| --- | --- | --- | --- |",
    ]
    for goal, measured, holds, why in _goals(results):
        mark = "-" if holds is None else ("yes" if holds else "**no**")
        lines.append(f"| {goal} | {_cell(measured)} | {mark} | {_cell(why)} |")
    for name in ALL:
        entry = results["scenarios"].get(name)
        if entry is None:
            continue
        source, text = DESCRIPTIONS[name]
        when = f", finished {entry['date']}" if entry.get("date") else ""
        lines += ["", f"## {name}", "", f"{text} Source: [`{source}`](../{source}); took {entry['seconds']} s{when}.", ""]
        if "error" in entry:
            lines += [f"**Failed:** `{entry['error'][:800]}`"]
            continue
        if name == "networks":
            lines += networks.render(entry["fields"])
            continue
        fields = {k: v for k, v in entry["fields"].items() if k != "scenario"}
        nested = {k: v for k, v in fields.items() if k.startswith("endpoints")}
        lines += ["| field | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {_cell(v)} |" for k, v in fields.items() if k not in nested]
        if "endpoints" in nested:
            base = nested.get(f"endpoints_{fields.get('baseline_clients')}")
            if base:
                b, n = fields["baseline_clients"], fields["clients"]
                lines += ["", f"| endpoint | requests ({b}) | p50 ms ({b}) | p95 ms ({b}) | requests ({n}) | p50 ms ({n}) "
                          f"| p95 ms ({n}) |", "| --- | --- | --- | --- | --- | --- | --- |"]
                lines += [f"| `{k}` | {base[k]['n']} | {_cell(base[k]['p50_ms'])} | {_cell(base[k]['p95_ms'])} | {v['n']} "
                          f"| {_cell(v['p50_ms'])} | {_cell(v['p95_ms'])} |" for k, v in nested["endpoints"].items()]
            else:
                lines += ["", "| endpoint | requests | p50 ms | p95 ms |", "| --- | --- | --- | --- |"]
                lines += [f"| `{k}` | {v['n']} | {_cell(v['p50_ms'])} | {_cell(v['p95_ms'])} |"
                          for k, v in nested["endpoints"].items()]
        for note in _notes(results).get(name, []):
            lines += ["", note]
        for png in plots.get(name, []):
            lines += ["", f"![{name}]({png})"]
    PAGE.write_text("\n".join(lines) + "\n")
    print(f"wrote {PAGE.relative_to(ROOT)} and {sum(len(v) for v in plots.values())} plots", flush=True)
