"""The goals the benchmark page checks (issue 7's, issue 9's load test): each as (goal, what was
measured, whether it holds, why not), from the fields of one `python -m bench all` run."""
from __future__ import annotations

import json

from .common import ROOT

SERIES = ROOT / "docs" / "benchmarks" / "series"


def series(name: str) -> dict:
    """A scenario's saved series (docs/benchmarks/series/NAME.json), {} when it has none."""
    path = SERIES / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def fields_of(results: dict, name: str) -> dict | None:
    return results["scenarios"].get(name, {}).get("fields")


def goals(results: dict) -> list[tuple[str, str, bool | None, str]]:
    """(goal, measured, holds, why not) for issue 7's goals and issue 9's load test."""
    rows = []
    cores = results["machine"].get("cores")

    s = fields_of(results, "swap")
    if s:
        holds = s["ratio"] <= 1.15
        rows.append(("swap `ratio` <= 1.15", f"{s['ratio']} (engine {s['engine_load_s']} s, raw read {s['raw_read_s']} s, "
                     f"naive {s['naive_load_s']} s)", holds,
                     "" if holds else "The engine's load is the raw read plus building the module on the meta device, "
                     "assigning the tensors and faulting every page in, and the lease's bookkeeping; see the fields."))

    g = fields_of(results, "grouping")
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

    i = fields_of(results, "interactive")
    if i:
        p95_ok, ev_ok = i["ratio_p95"] <= 1.5, i["interactive_evictions"] == 0
        why = []
        if not p95_ok:
            why.append(f"On {cores} cores the video job keeps one core busy with its own detector instance (jobs run "
                       "torch with one thread fewer than the machine has) and ffmpeg decodes and encodes beside it, "
                       "so the interactive call shares the CPU: its torch threads and Gradio's upload, decode and PNG "
                       "encode each find a core taken part of the time. Job threads run --job-nice steps below it, "
                       "which the kernel honours only among threads it can preempt; ONNX Runtime's thread pools "
                       "keep the priority of the thread that loaded the model. More cores, or a GPU for the job, "
                       "remove the contention; the engine does not pause a running job for an interactive call.")
        if not ev_ok:
            why.append(f"{i['interactive_evictions']} interactive models were evicted to make room for the job.")
        rows.append(("`ratio_p95` <= 1.5 with 0 interactive evictions",
                     f"{i['ratio_p95']} (p95 {i['busy_p95_ms']} ms busy vs {i['idle_p95_ms']} ms idle), "
                     f"{i['interactive_evictions']} evictions", p95_ok and ev_ok, " ".join(why)))

    v = fields_of(results, "video-memory")
    if v:
        holds = v["rss_ratio"] <= 1.1
        rows.append(("`rss_ratio` <= 1.1", f"{v['rss_ratio']} ({v['rss_10s_mb']} MiB vs {v['rss_120s_mb']} MiB; "
                     f"{v['fps_10s']} / {v['fps_120s']} fps, ceiling {v['ceiling_fps']} fps)", holds,
                     "" if holds else "Peak RSS grew with the video's length: something holds per-frame data."))
        speed = min(v["fps_10s"], v["fps_120s"]) / v["ceiling_fps"]
        rows.append(("anonymiser speed >= 0.25 x the decode+encode `ceiling_fps`",
                     f"{speed:.2f} x (the slower of {v['fps_10s']} / {v['fps_120s']} fps against {v['ceiling_fps']})",
                     speed >= 0.25, "" if speed >= 0.25 else "Face detection per frame costs more than the goal "
                     "allows: scans every tabs.faces.tracks.EVERY frames, MTCNN's pyramid per scan."))

    d = fields_of(results, "drift")
    if d:
        a = fields_of(results, "python-allocator")
        cost = f"a median call {a['median_speed_ratio']}x as long" if a else "slower calls"
        pct, floor = d["evicting.rss_drift_pct"], d.get("evicting.floor_drift_pct")
        # The floor (RSS with every model unloaded, once per round) is what the runs did not give
        # back; the RSS after each run swings with the models loaded at the time (see its se).
        held = abs(floor if floor is not None else pct) < 1 and abs(d["resident.rss_drift_pct"]) < 1
        floors = "" if floor is None else (f"evicting: floor {floor} % ({d['evicting.floor_growth_mb']} MiB over the "
                                           f"warm runs, floors {d['evicting.floor_mb']} MiB), ")
        rows.append(("drift over 200 mixed runs once warm < 1 % of the budget",
                     f"{floors}after each run {pct} % (slope {d['evicting.rss_slope_mb_per_100']} ± "
                     f"{d['evicting.rss_slope_se_mb_per_100']} MiB/100 runs); resident {d['resident.rss_drift_pct']} %; "
                     f"trimmed after each run {d['evicting-trim.rss_drift_pct']} %", held,
                     "Judged on the evicting variant's floor and the resident variant. After each run RSS holds "
                     "whichever models are loaded then, a swing several % of this budget wide (the slope's se)."
                     if held else "The floor, RSS with every model unloaded, rises over the first rounds and then "
                     "stays flat: pymalloc's 1 MiB arenas filling (they go back only when wholly empty). Under "
                     "PYTHONMALLOC=malloc it was flat from the first round, at the level pymalloc reaches, with "
                     f"{cost} (bench python-allocator): the app keeps pymalloc."))

    e = fields_of(results, "estimate")
    if e:
        err_ok, under_ok = e["median_abs_err"] < 0.10, e["underestimate_rate"] < 0.01
        why = []
        rows_data = series("estimate").get("rows", [])
        unders = [r for r in rows_data if r["under"]]
        if unders:
            unseen = sum(not r.get("bucket_seen", True) for r in unders)
            cold = sum(r["cold"] for r in unders)
            why.append(f"Of {len(unders)} underestimates, {unseen} were the first run at their size (predicted "
                       "from the fit over the sizes measured before, or scaled from the one size known) and "
                       f"{cold} included a load (predicted with the first call after a load, learned apart).")
        small = [r for r in rows_data if r["measured_mb"] < 10]
        if small:
            why.append(f"{len(small)} runs measured under 10 MiB, where a MiB of allocator noise is a 10-100 % error "
                       f"({sum(r['under'] for r in small)} of them underestimates).")
        if not err_ok:
            why.append("ONNX Runtime's CPU arena keeps a session's largest run (the engine's default, the fastest; "
                       "bench onnx-arena), so later runs grow RSS by little and the first call after a load, "
                       "learned apart, carries the arena's growth. With the arena shrunk or off the peaks move "
                       "with the heap or step in powers of two (engine/runtimes/onnx_runtime.py). A session's "
                       "later runs are learned by kind (a size it has run, a new size below its largest, one "
                       "beyond it), but in a fresh store most kinds have no point yet when first met. Also left: "
                       "the first run at a new size comes from a line through other sizes, and several nets "
                       "are not affine in their input (the face detector's image pyramid, chunked audio). "
                       "`old_*`: the power-of-two-bucket rule before issue 16, on the same runs.")
        if e.get("restart"):
            r = e["restart"]
            why.append(f"After a restart, on the footprints the first process learned (every size measured "
                       f"before, as for an app in use): {r['median_abs_err']} and {r['underestimate_rate']} "
                       f"(cold runs {r['cold']['median_abs_err']} and {r['cold']['underestimate_rate']}).")
        if e.get("repeat"):
            r = e["repeat"]
            why.append(f"The same runs after the same history, measured again in a fresh process, differ by "
                       f"{r['median_rel_diff']} in the median ({round(100 * r['over_10_percent'])} % by over 0.10): "
                       "the measure repeats, so what is left is the prediction's, mostly what a session's earlier "
                       "runs left in its arena and heap.")
        rows.append(("`median_abs_err` < 0.10 and `underestimate_rate` < 0.01",
                     f"{e['median_abs_err']} and {e['underestimate_rate']} over {e['runs']} runs",
                     err_ok and under_ok, " ".join(why)))

    o = fields_of(results, "overhead")
    if o:
        holds = o["overhead_us"] < 500
        rows.append(("`overhead_us` < 500", f"{o['overhead_us']} us ({o['engine_us']} vs {o['direct_us']} us)", holds,
                     "Per call the engine resets and reads the kernel's peak-RSS mark, reads /proc/meminfo for "
                     "the lease's headroom check and the process RSS twice (engine/procfs.py, through descriptors "
                     "kept open: an open cost ~25 us here), and appends the run record to runs.jsonl (kept open, "
                     "serialised by hand; dataclasses.asdict alone was ~100 us). Before those two changes the "
                     "same scenario measured 757 us."))

    st = fields_of(results, "startup")
    if st:
        rows.append(("startup (no goal)", f"first page {st['first_page_s']} s, first answer {st['first_answer_s']} s",
                     None, ""))

    m = fields_of(results, "oom-stress")
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
        if peak_ok:
            why.append("Admission counts what the process holds beyond the pool's ledger (Residency.overhang), "
                       "what a run alone left (an ONNX Runtime arena) is billed to its model so that evicting "
                       "it is known to free it, and blocks of 4 MiB and more go back to the system when freed "
                       "(engine/measure.fix_mmap_threshold; under glibc's moving threshold runs of this bench "
                       "peaked from -4.9 to +5.2 % of the budget).")
        rows.append(("`user_visible_oom` == 0 with `peak_mb` <= `budget_mb`",
                     f"{m['user_visible_oom']} of {m['jobs']} ({m['completed']} completed, {m['retries']} retries); "
                     f"peak {m['peak_mb']} MiB, budget {m['budget_mb']} MiB", oom_ok and peak_ok, " ".join(why)))

    c = fields_of(results, "cluster")
    if c:
        lost_ok, loads_ok = c["lost"] == 0, c["loads_affinity"] <= c["loads_round_robin"]
        why = ([f"{c['lost']} jobs were lost after a worker was killed."] if not lost_ok else []) + (
            ["Routing by model loaded models more often than round-robin."] if not loads_ok else [])
        rows.append(("cluster (issue 17): `lost` == 0 and `loads_affinity` <= `loads_round_robin`",
                     f"lost {c['lost']} of {c['jobs']}, {c['resumed_after_kill']} resumed after the kill; loads "
                     f"{c['loads_affinity']} by model against {c['loads_round_robin']} round-robin "
                     f"({c['distinct_models']} models; one worker: {c['loads_1']}); makespan one worker "
                     f"{c['makespan_1_s']} s, two {c['makespan_2_s']} s", lost_ok and loads_ok, " ".join(why)))

    ld = fields_of(results, "load")
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
        if "interactive_p95_ratio" in ld:
            b = ld["baseline_clients"]
            rows.append((f"load (issue 18): {ld['clients']} clients: 0 errors, interactive p95 <= 2x the same at {b}, "
                         "every job ends, per-user share of finished jobs within 2x",
                         f"errors {ld['errors']} ({ld[f'errors_{b}']} at {b}); interactive p95 {ld['interactive_p95_ms']} "
                         f"ms vs {ld[f'interactive_p95_ms_{b}']} ms = {ld['interactive_p95_ratio']}x; jobs "
                         f"{ld['long_jobs_ended']}/{ld['long_jobs']}; done per user {ld['jobs_per_user']} (ratio "
                         f"{ld['share_ratio']}); threads idle {ld['threads_idle']}, max {ld['threads_max']}",
                         ld["done"], _load_why(ld, b)))
    return rows


def _load_why(ld: dict, b: int) -> str:
    """Why issue 18's load row missed, in the run's own numbers."""
    why = []
    if not ld["p95_within_2x"]:
        why.append(f"The machine's cores were full in both phases: {ld[f'requests_{b}']} requests in "
                   f"{ld['seconds']} s with {b} clients, {ld['requests']} with {ld['clients']} "
                   f"({ld['requests'] / max(ld[f'requests_{b}'], 1) - 1:+.0%} for {ld['clients'] / b:.1f}x the clients), "
                   "so the extra clients wait in the queues (Gradio's per-endpoint limits, one job worker); the "
                   f"server's threads stayed at most {ld['threads_max']}.")
        if "cpu" in ld and f"cpu_{b}" in ld:
            top, base = ld["cpu"], ld[f"cpu_{b}"]
            why.append(f"Cores busy {base['machine_busy']:.0%} with {b} clients and {top['machine_busy']:.0%} with "
                       f"{ld['clients']}; the clients themselves, on the same cores, took {base['clients_s']} and "
                       f"{top['clients_s']} CPU seconds against the server's {base['server_s']} and {top['server_s']}.")
    if not ld["no_errors"]:
        why.append(f"{ld['errors']} errors at {ld['clients']}, {ld[f'errors_{b}']} at {b}.")
    if not ld["every_job_ended"]:
        why.append("Some jobs did not end.")
    if not ld["share_within_2x"]:
        why.append(f"Per-user share ratio {ld['share_ratio']}.")
    return " ".join(why)
