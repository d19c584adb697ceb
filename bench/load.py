"""load: 50 API clients across several logins, against the same mix at 16 clients, side by side.

The real app (launch.py --budget B --auth-file F --admins admin) runs in a subprocess with USERS
logins (user1..user5) and an admin. One app, two phases: first BASELINE_CLIENTS (16) clients for
SECONDS, then CLIENTS (50) for SECONDS. One app rather than two: both phases then share the same
loaded models, caches and warm-up, so the ratio of their latencies is the load's alone, not two
starts' (and it saves a start and preload, a minute or more on two cores). Between the phases every
job has ended and the server's threads are left to go idle (bench/load_roles.settle_threads).

In each phase (bench/load_roles.run_phase) each gradio_client client, in its own thread with its
own connection and login (clients spread round-robin over the users), is one of:
- a job client (a third of the clients, rounded down: 5 of 16, 16 of 50): submits a job, waits
  for its video, submits the next, alternating blur_faces_video and stylize_video on a 1 s
  480x360 video;
- an interactive client (the rest): goes round detect_faces, nsfw_check, ocr, speak and
  detect_speech, with a think time of 1-3 s (uniform) after each answer, as a person would.
Clients arrive over the first 3 s. When the time is up no new request starts; every job under way
is waited for (each must end). Clients wait up to 120 s per HTTP exchange.

Fields (the 50-client phase; the same with `_16` for the 16-client one: `_N` for a baseline of N):
- requests, errors (requests that raised, clients stuck past the drain, failed logins),
  user_visible_oom (errors that speak of memory), long_jobs and long_jobs_ended (the phase's jobs
  in the admin's list_jobs, and those done), jobs_per_user (done jobs per owner) and share_ratio
  (largest / smallest of them over the users with job clients).
- threads_idle (the server's thread count, idle, just before the phase), threads_max and
  threads_median (sampled every 0.25 s from /proc/PID/status during the phase).
- interactive_p95_ms: p95 over all interactive calls; endpoints: per endpoint n, p50_ms, p95_ms of
  the client-side latency (upload, queue, run, answer; for jobs the whole job).
- cpu: where the cores went during the phase: server_s (the app's CPU seconds, its finished
  ffmpeg runs included), clients_s (this process's: the clients run on the same machine),
  machine_busy (share of all cores busy, /proc/stat).
- peak_rss_mb (server process, the larger of VmHWM and 0.25 s samples, both phases), peak_tree_mb
  (with its ffmpeg children), engine_peak_mb (system_status, each second), budget_mb, within_budget.
- interactive_p95_ratio = interactive_p95_ms / interactive_p95_ms_16; the issue's checks as
  booleans: no_errors (both phases), p95_within_2x, every_job_ended (both phases),
  share_within_2x (50 clients), and done (all four).

`python -m bench load [--budget cpu=4GiB]`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .common import App, mb, percentile, read_hwm, save_series
from .load_roles import CLIENT_TIMEOUT_S, INTERACTIVE, JOBS, SENTENCE, THINK_S, call, connect, is_memory_error, \
    make_inputs, roles, run_phase, write_logins

CLIENTS = 50
BASELINE_CLIENTS = 16
USERS = 5
ADMIN = "admin"
SECONDS = 120
BUDGET = "cpu=4GiB"


def _p(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 1) if values else None


def _summary(phase: dict, jobs_before: set, jobs_after: list[dict]) -> dict:
    """The fields of one phase from its requests and the jobs it left in the admin's list."""
    results = phase["results"]
    errors = [r["error"] for r in results if r["error"]] + phase["failed_logins"]
    endpoints = {}
    for name in INTERACTIVE + JOBS:
        times = [r["ms"] for r in results if r["endpoint"] == name and not r["error"]]
        endpoints[name] = {"n": len(times), "p50_ms": _p(times, 50), "p95_ms": _p(times, 95)}
    interactive = [r["ms"] for r in results if r["role"] == "interactive" and not r["error"]]
    jobs = [j for j in jobs_after if j["id"] not in jobs_before and j["capability"] in JOBS]
    job_users = sorted({r["user"] for r in results if r["role"] == "job"})
    per_user = {user: sum(j["state"] == "done" and j.get("owner") == user for j in jobs) for user in job_users}
    counts = list(per_user.values())
    states: dict[str, int] = {}
    for j in jobs:
        states[j["state"]] = states.get(j["state"], 0) + 1
    return {"requests": len(results), "errors": len(errors) + phase["stuck"],
            "user_visible_oom": sum(is_memory_error(e) for e in errors),
            "long_jobs": len(jobs), "long_jobs_ended": states.get("done", 0), "job_states": states,
            "jobs_per_user": per_user,
            "share_ratio": round(max(counts) / min(counts), 2) if counts and min(counts) else None,
            "threads_idle": phase["threads_idle"], "threads_max": phase["threads_max"],
            "threads_median": phase["threads_median"],
            "interactive_p95_ms": _p(interactive, 95), "interactive_p50_ms": _p(interactive, 50),
            "wall_s": phase["wall_s"], "cpu": phase["cpu"], "endpoints": endpoints, "error_samples": errors[:3]}


def run(verbose: bool = True, budget: str | None = None, seconds: float = SECONDS, clients: int = CLIENTS,
        baseline_clients: int = BASELINE_CLIENTS, users: int = USERS) -> dict:
    from engine.devices import parse_budget

    if baseline_clients >= clients:
        raise ValueError(f"baseline_clients ({baseline_clients}) must be fewer than clients ({clients})")
    budget = budget or BUDGET
    budget_bytes = parse_budget(budget)["cpu"]
    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-load-"))
    files = make_inputs(folder)
    names = [f"user{k + 1}" for k in range(users)]
    auth_file, passwords = write_logins(folder, names, ADMIN)
    app = App(folder / "data", "--budget", budget, "--auth-file", str(auth_file), "--admins", ADMIN)
    phases, summaries = {}, {}
    try:
        app.wait_page()
        admin = connect(app.url, ADMIN, passwords[ADMIN])
        app.wait_preloaded(admin)
        files["speech"] = admin.predict(SENTENCE, 1.0, api_name="/speak")
        for endpoint in INTERACTIVE:  # one of each first: nothing below measures a first call
            call(admin, endpoint, files)
        for n in (baseline_clients, clients):
            before = {j["id"] for j in admin.predict(api_name="/list_jobs")["jobs"]}
            phases[n] = run_phase(app.url, app.proc.pid, roles(n, names), passwords, files, seconds, admin, verbose)
            summaries[n] = _summary(phases[n], before, admin.predict(api_name="/list_jobs")["jobs"])
            if verbose:
                s = summaries[n]
                print(f"{n} clients: {s['requests']} requests, {s['errors']} errors, interactive p95 "
                      f"{s['interactive_p95_ms']} ms, jobs {s['long_jobs_ended']}/{s['long_jobs']} "
                      f"{s['jobs_per_user']}, threads idle {s['threads_idle']} max {s['threads_max']}, cpu {s['cpu']}",
                      flush=True)
                for name, row in s["endpoints"].items():
                    print(f"  {name}: {row}", flush=True)
                for error in s["error_samples"]:
                    print(f"  error: {error}", flush=True)
        # VmHWM alone would miss peaks: the engine's probe resets it at each run it measures.
        peak_rss = max([read_hwm(app.proc.pid) or 0] + [max(p["memory"].rss, default=0) for p in phases.values()])
        admin.close()
    finally:
        app.stop()

    top, base = summaries[clients], summaries[baseline_clients]
    memory = phases[clients]["memory"]
    ratio = (round(top["interactive_p95_ms"] / base["interactive_p95_ms"], 2)
             if top["interactive_p95_ms"] and base["interactive_p95_ms"] else None)
    checks = {"no_errors": top["errors"] == 0 and base["errors"] == 0,
              "p95_within_2x": ratio is not None and ratio <= 2,
              "every_job_ended": all(s["long_jobs_ended"] == s["long_jobs"] for s in (top, base)),
              "share_within_2x": top["share_ratio"] is not None and top["share_ratio"] <= 2}
    tail = f"_{baseline_clients}"   # the baseline phase's fields: _16 by default
    save_series("load", {
        "latencies_ms": {k: [r["ms"] for r in phases[clients]["results"] if r["endpoint"] == k and not r["error"]]
                         for k in top["endpoints"]},
        f"latencies_ms{tail}": {k: [r["ms"] for r in phases[baseline_clients]["results"]
                                if r["endpoint"] == k and not r["error"]] for k in base["endpoints"]},
        "memory": {**memory.series_mb(tree=True), "process_mb": memory.series_mb()["mb"]},
        "engine": phases[clients]["engine"], "budget_mb": mb(budget_bytes),
        "threads": phases[clients]["threads_series"], f"threads{tail}": phases[baseline_clients]["threads_series"]})
    fields = {"scenario": "load", "clients": clients, "baseline_clients": baseline_clients, "seconds": seconds,
              "users": users, "job_clients": clients // 3, f"job_clients{tail}": baseline_clients // 3,
              "think_s": list(THINK_S), "interactive_p95_ratio": ratio, **checks, "done": all(checks.values())}
    fields.update({k: v for k, v in top.items() if k != "endpoints"})
    peak_tree = max(max(p["memory"].tree, default=0) for p in phases.values())
    fields.update({"peak_rss_mb": mb(peak_rss), "peak_tree_mb": mb(peak_tree),
                   "engine_peak_mb": max((v for _, v in phases[clients]["engine"]), default=None),
                   "budget_mb": mb(budget_bytes), "within_budget": peak_rss <= budget_bytes,
                   "client_timeout_s": CLIENT_TIMEOUT_S})
    fields.update({f"{k}{tail}": v for k, v in base.items() if k != "endpoints"})
    fields["endpoints"] = top["endpoints"]
    fields[f"endpoints{tail}"] = base["endpoints"]
    return fields
