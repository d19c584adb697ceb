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

from . import networks, plot
from .common import ROOT, machine

ALL = ["swap", "grouping", "interactive", "video-memory", "estimate", "overhead", "startup", "oom-stress", "load",
       "networks"]
TAKES_BUDGET = ("interactive", "load")
PAGE = ROOT / "docs" / "benchmarks.md"
ASSETS = ROOT / "docs" / "benchmarks"
RESULTS = ASSETS / "results.json"
SERIES = ASSETS / "series"

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
                    "gradio_client, 30 calls idle, then 30 while the face anonymiser runs a 720p video job."),
    "video-memory": ("bench/video.py", "The face anonymiser job on a 10 s and a 120 s 1280x720 video, each in a fresh "
                     "process (peak RSS: VmHWM and 0.1 s samples); the ceiling is the same job path with no model. "
                     "10 frames per second, so that the 120 s video's 1,200 frames fit the run."),
    "estimate": ("bench/estimate.py", "Vision models at several input sizes in random order, half with the model "
                 "unloaded first; the engine's prediction (learned footprints, read before the run) against the peak RSS "
                 "the run added."),
    "overhead": ("bench/overhead.py", "A 16x16 linear layer called directly vs through `engine.infer` (run record, "
                 "lease, memory probe, OOM guard); 15 interleaved blocks of 200 calls, medians of block means."),
    "startup": ("bench/startup.py", "`launch.py` with a fresh data dir: time to the first HTTP 200, and to the first "
                "`detect_faces` answer through gradio_client. Median of 3."),
    "oom-stress": ("bench/oom_stress.py", "Every available model (vision and audio), footprints learned in a first process; "
                   "then 100 jobs in random order, 3 at a time, under a budget of 60 % of the footprints' sum, with real "
                   "allocation failures injected in 10 % of the runs (during the load, before or after the model's call)."),
    "load": ("bench/load.py", "Issue 9's load test: 20 gradio_client clients for 75 s against the real app "
             "(`--budget`), 16 going round detect_faces, nsfw_check, ocr, speak and detect_speech, 4 submitting "
             "blur_faces_video and stylize_video jobs; then every job under way is waited for. Latencies are the "
             "client's: on two cores they are mostly waiting in Gradio's queue (two calls at a time per endpoint) "
             "and one job at a time in the job queue. `peak_rss_mb` is the whole server process (Python, Gradio, "
             "every model) against the engine's `--budget`; ffmpeg children (`peak_tree_mb`) are outside the "
             "engine's accounting. Clients wait up to 120 s per HTTP exchange: with gradio_client's default "
             "(httpx, 5 s) a first run here saw 5 uploads of the opening burst time out."),
    "networks": ("bench/networks.py", "Every model of the catalog (tabs.catalog.default_specs()), each in a fresh process: "
                 "cold and median-of-3 load through the pool, the engine's measured footprint and run peak, latency of "
                 "the capability's own function on a standard input (512 px photo, a sentence, 5 s of Piper speech), "
                 "median of 5 after a warm-up; a model without a standard input yet is listed with load and footprint "
                 "only."),
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
    results["note"] = (f"Scenarios {', '.join(names)} rerun with --only; the others are from the last full run."
                       if only else "")
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

def _f(results: dict, name: str) -> dict | None:
    return results["scenarios"].get(name, {}).get("fields")


def _goals(results: dict) -> list[tuple[str, str, bool | None, str]]:
    """(goal, measured, holds, why not) for issue 7's goals and issue 9's load test."""
    rows = []
    cores = results["machine"].get("cores")

    s = _f(results, "swap")
    if s:
        holds = s["ratio"] <= 1.15
        rows.append(("swap `ratio` <= 1.15", f"{s['ratio']} (engine {s['engine_load_s']} s, raw read {s['raw_read_s']} s, "
                     f"naive {s['naive_load_s']} s)", holds,
                     "" if holds else "The engine's load is the raw read plus building the module on the meta device, "
                     "assigning the tensors and faulting every page in, and the lease's bookkeeping; see the fields."))

    g = _f(results, "grouping")
    if g:
        loads_ok = g["loads_grouped"] == g["distinct_models"]
        span_ok = g["makespan_grouped_s"] <= 0.5 * g["makespan_fifo_s"]
        why = []
        if not loads_ok:
            bound_hit = g["max_passed_over"] >= g.get("max_passed_over_bound", 10 ** 9)
            why.append(f"{g['loads_grouped']} loads for {g['distinct_models']} models: "
                       + (f"the fairness bound (no job passed over more than {g['max_passed_over_bound']} times) "
                          "was reached, and it sends the worker to the starving job's cold model even though that "
                          "model comes back later for the rest of its group"
                          + (f"; the same jobs with a bound no job reaches took {g['loads_grouped_unbounded']} loads"
                             if "loads_grouped_unbounded" in g else "")
                          + ". The extra load is the price of no job waiting for ever."
                          if bound_hit else "a model was evicted while jobs for it were still queued."))
        if not span_ok:
            ratio = g["makespan_grouped_s"] / g["makespan_fifo_s"]
            why.append(f"makespan ratio {ratio:.2f}: grouping saves {g['loads_fifo'] - g['loads_grouped']} loads, "
                       f"and a load here costs about {g['load_s']} s against a job's {g['job_s']} s of compute; the "
                       "saving can only reach one half when the loads FIFO repeats cost as much as all the compute.")
        rows.append(("`loads_grouped` == `distinct_models` and `makespan_grouped_s` <= 0.5 x `makespan_fifo_s`",
                     f"loads {g['loads_grouped']} / {g['distinct_models']} models (FIFO {g['loads_fifo']}, seed "
                     f"{g['loads_seed']}); makespan {g['makespan_grouped_s']} s vs FIFO {g['makespan_fifo_s']} s "
                     f"(seed {g['makespan_seed_s']} s)", loads_ok and span_ok, " ".join(why)))

    i = _f(results, "interactive")
    if i:
        p95_ok, ev_ok = i["ratio_p95"] <= 1.5, i["interactive_evictions"] == 0
        why = []
        if not p95_ok:
            why.append(f"On {cores} cores the video job keeps one core busy with its own detector instance (jobs run "
                       "torch with one thread fewer than the machine has) and ffmpeg decodes and encodes beside it, "
                       "so the interactive call shares the CPU: its torch threads and Gradio's upload, decode and PNG "
                       "encode each find a core taken part of the time. More cores, or a GPU for the job, remove the "
                       "contention; the engine does not pause a running job for an interactive call.")
        if not ev_ok:
            why.append(f"{i['interactive_evictions']} interactive models were evicted to make room for the job.")
        rows.append(("`ratio_p95` <= 1.5 with 0 interactive evictions",
                     f"{i['ratio_p95']} (p95 {i['busy_p95_ms']} ms busy vs {i['idle_p95_ms']} ms idle), "
                     f"{i['interactive_evictions']} evictions", p95_ok and ev_ok, " ".join(why)))

    v = _f(results, "video-memory")
    if v:
        holds = v["rss_ratio"] <= 1.1
        rows.append(("`rss_ratio` <= 1.1", f"{v['rss_ratio']} ({v['rss_10s_mb']} MiB vs {v['rss_120s_mb']} MiB; "
                     f"{v['fps_10s']} / {v['fps_120s']} fps, ceiling {v['ceiling_fps']} fps)", holds,
                     "" if holds else "Peak RSS grew with the video's length: something holds per-frame data."))

    e = _f(results, "estimate")
    if e:
        err_ok, under_ok = e["median_abs_err"] < 0.10, e["underestimate_rate"] < 0.01
        why = []
        rows_data = _series("estimate").get("rows", [])
        unders = [r for r in rows_data if r["under"]]
        if unders:
            unseen = sum(not r.get("bucket_seen", True) for r in unders)
            cold = sum(r["cold"] for r in unders)
            why.append(f"Of {len(unders)} underestimates, {unseen} were the first run in their size bucket (the "
                       "store then falls back to the largest peak of another bucket, which is smaller when the new "
                       f"input is larger) and {cold} included a load: the load's transient peak (file buffers, "
                       "session build) and a first run on a freshly trimmed heap go past the load bytes the pool "
                       "keeps plus a run peak learned on a warm heap.")
        if not err_ok:
            why.append("The error is large both ways because on the CPU a run's peak is RSS growth: memory that "
                       "ONNX Runtime's arena or glibc kept from an earlier run is reused without growing RSS, so a "
                       "warm run measures far below the learned peak (the engine keeps the largest peak seen, on "
                       "purpose), and a size bucket spans a factor of 2 in pixels.")
        rows.append(("`median_abs_err` < 0.10 and `underestimate_rate` < 0.01",
                     f"{e['median_abs_err']} and {e['underestimate_rate']} over {e['runs']} runs",
                     err_ok and under_ok, " ".join(why)))

    o = _f(results, "overhead")
    if o:
        holds = o["overhead_us"] < 500
        rows.append(("`overhead_us` < 500", f"{o['overhead_us']} us ({o['engine_us']} vs {o['direct_us']} us)", holds,
                     "Per call the engine resets and reads the kernel's peak-RSS mark, reads /proc/meminfo for "
                     "the lease's headroom check and the process RSS twice (engine/procfs.py, through descriptors "
                     "kept open: an open cost ~25 us here), and appends the run record to runs.jsonl (kept open, "
                     "serialised by hand; dataclasses.asdict alone was ~100 us). Before those two changes the "
                     "same scenario measured 757 us."))

    st = _f(results, "startup")
    if st:
        rows.append(("startup (no goal)", f"first page {st['first_page_s']} s, first answer {st['first_answer_s']} s",
                     None, ""))

    m = _f(results, "oom-stress")
    if m:
        oom_ok, peak_ok = m["user_visible_oom"] == 0, m["peak_mb"] <= m["budget_mb"]
        why = []
        if not oom_ok:
            why.append(f"{m['user_visible_oom']} runs ended in an out-of-memory error.")
        if not peak_ok:
            over = m.get("over_budget_pool") or []
            why.append(f"The process grew {m['peak_mb']} MiB above its start, past the {m['budget_mb']} MiB budget; "
                       f"the pool's own accounting peaked at {m['engine_peak_mb']} MiB. The budget caps what the pool "
                       "admits by learned footprints, while RSS also holds what the allocators keep after a model "
                       "is gone, the inputs and outputs of three concurrent runs, and the transient peaks that "
                       "learned footprints miss (see estimate: how often a run exceeds its estimate). Peaks "
                       "measured while other calls ran are not learned over clean ones (they once made a model "
                       "wait for more than the whole budget), so admission is tighter and RSS can pass it."
                       + (f" When the accounting first passed the budget the pool held: {'; '.join(over)}." if over else ""))
        rows.append(("`user_visible_oom` == 0 with `peak_mb` <= `budget_mb`",
                     f"{m['user_visible_oom']} of {m['jobs']} ({m['completed']} completed, {m['retries']} retries); "
                     f"peak {m['peak_mb']} MiB, budget {m['budget_mb']} MiB", oom_ok and peak_ok, " ".join(why)))

    ld = _f(results, "load")
    if ld:
        ok = (ld["errors"] == 0 and ld["user_visible_oom"] == 0 and ld["within_budget"]
              and ld["long_jobs_ended"] == ld["long_jobs"])
        why = []
        if ld["errors"]:
            samples = ld.get("error_samples") or []
            why.append(f"{ld['errors']} of {ld['requests']} requests failed: {'; '.join(samples)}.")
            if any("without sending complete message body" in e for e in samples):
                why.append("A download cut short: look for a Gradio cache writer that ui/gradio_patches.py does not "
                           "yet stage (it makes save_pil_to_cache, save_bytes_to_cache and save_audio_to_cache "
                           "write under a private name and rename, after an earlier run here lost one download "
                           "to two identical outputs rewriting one cache file).")
        if not ld["within_budget"]:
            why.append(f"peak RSS {ld['peak_rss_mb']} MiB passed the budget {ld['budget_mb']} MiB.")
        if ld["long_jobs_ended"] != ld["long_jobs"]:
            why.append(f"{ld['long_jobs'] - ld['long_jobs_ended']} long jobs did not end.")
        rows.append(("load (issue 9): no errors, no user-visible OOM, peak within `--budget`, every long job ends",
                     f"{ld['requests']} requests, {ld['errors']} errors, {ld['user_visible_oom']} OOM; peak RSS "
                     f"{ld['peak_rss_mb']} MiB of {ld['budget_mb']} MiB; {ld['long_jobs_ended']}/{ld['long_jobs']} "
                     "jobs ended", ok, " ".join(why)))
    return rows


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

def _series(name: str) -> dict:
    path = SERIES / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


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
            {"idle": s["idle_ms"], "while a video job runs": s["busy_ms"]}))
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
            p, "load: latency per endpoint (20 clients)", "milliseconds (log)", s["latencies_ms"], log=True))
        series = [("server process RSS", s["memory"]["t"], s["memory"]["process_mb"]),
                  ("with its ffmpeg children", s["memory"]["t"], s["memory"]["mb"])]
        if s.get("engine"):
            series.append(("engine's resident models", [t for t, _ in s["engine"]], [v for _, v in s["engine"]]))
        add("load", "load-memory.png", lambda p: plot.line(p, "load: memory over time", "seconds", "MiB", series,
                                                           hlines=[("budget", s["budget_mb"])]))
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
        nested = {k: v for k, v in fields.items() if k == "endpoints"}
        lines += ["| field | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {_cell(v)} |" for k, v in fields.items() if k not in nested]
        if "endpoints" in nested:
            lines += ["", "| endpoint | requests | p50 ms | p95 ms |", "| --- | --- | --- | --- |"]
            lines += [f"| `{k}` | {v['n']} | {_cell(v['p50_ms'])} | {_cell(v['p95_ms'])} |"
                      for k, v in nested["endpoints"].items()]
        for note in _notes(results).get(name, []):
            lines += ["", note]
        for png in plots.get(name, []):
            lines += ["", f"![{name}]({png})"]
    PAGE.write_text("\n".join(lines) + "\n")
    print(f"wrote {PAGE.relative_to(ROOT)} and {sum(len(v) for v in plots.values())} plots", flush=True)
