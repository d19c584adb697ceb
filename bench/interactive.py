"""interactive: detect_faces through the HTTP API (gradio_client), idle, then while a long job runs.

The real app (launch.py) runs in a subprocess with a budget; one client calls detect_faces on a
512 px photo CALLS times in a row with nothing else running (idle), then submits a long job (the
face anonymiser on a 720p video, which leases the second instance of the same detector) and,
once the job is under way, calls detect_faces CALLS times again (busy). The job is cancelled
afterwards.

- idle_p50_ms, idle_p95_ms, busy_p50_ms, busy_p95_ms: client-side latency of each call (upload,
  queue, model, answer).
- ratio_p95: busy_p95_ms / idle_p95_ms.
- interactive_evictions: evictions of interactive models recorded in the app's run records
  from the first idle call until the job was cancelled.
- job_ran_throughout: the job was still running when the last busy call answered.
- job_fps: the job's frames per second while the busy calls ran.

Job threads run below interactive calls (launch.py --job-nice, default 10: engine/jobs.py). The
same is measured first in an app with --job-nice 0, side by side: `same_priority` holds its
idle_p95_ms, busy_p50_ms, busy_p95_ms, ratio_p95, job_fps and interactive_evictions.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import App, ms, percentile, save_series

CALLS = 30
BUDGET = "cpu=4GiB"
SECONDS, FPS = 30, 10
FRAMES = SECONDS * FPS


def _video(folder: Path, seconds: int = SECONDS, fps: int = FPS) -> Path:
    from tests.video_helpers import make_test_video

    from .video import HEIGHT, WIDTH, _draw_720p

    return make_test_video(folder / "long.mp4", frames=seconds * fps, width=WIDTH, height=HEIGHT, fps=fps,
                           draw=_draw_720p())


def _photo(folder: Path) -> str:
    import skimage.data
    from PIL import Image

    path = folder / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return str(path)


def _timed_calls(client, photo: str, calls: int) -> list[float]:
    from gradio_client import handle_file

    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        _, found = client.predict(handle_file(photo), api_name="/detect_faces")
        latencies.append(time.perf_counter() - started)
        assert len(found["faces"]) == 1, found
    return latencies


def interactive_evictions(runs: list[dict], roles: dict[str, str], since: float, until: float) -> int:
    return sum(1 for r in runs if since <= r["started"] <= until
               for name in r["evictions"] if roles.get(name) == "interactive")


def _variant(folder: Path, video: Path, photo: str, calls: int, budget: str, nice: int | None,
             verbose: bool) -> dict:
    """One app (job threads `nice` steps below the rest; None: launch.py's default): the calls
    idle, then busy beside the job, and how fast the job went meanwhile."""
    from gradio_client import Client, handle_file

    app = App(folder / f"data-{nice}", "--budget", budget, *(["--job-nice", str(nice)] if nice is not None else []))
    try:
        app.wait_page()
        client = Client(app.url, verbose=False)
        app.wait_preloaded(client)
        _timed_calls(client, photo, 3)  # warm: first requests pay Gradio's and torch's first-call costs
        since = time.time()
        idle = _timed_calls(client, photo, calls)
        client.submit(handle_file(str(video)), "blur", api_name="/blur_faces_video")
        job = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = client.predict(api_name="/list_jobs")["jobs"]
            job = next((j for j in jobs if j["state"] == "running" and j["progress"] > 0), None)
            if job:
                break
            time.sleep(0.2)  # polling the API from outside; no figure depends on this delay
        if job is None:
            raise RuntimeError("the long job never started")
        busy_from = time.perf_counter()
        busy = _timed_calls(client, photo, calls)
        busy_s = time.perf_counter() - busy_from
        state = next(j for j in client.predict(api_name="/list_jobs")["jobs"] if j["id"] == job["id"])
        until = time.time()
        client.predict(job["id"], api_name="/cancel_job")
        status = client.predict(api_name="/system_status")
        roles = {m["name"]: m["role"] for m in status["models"]}
        evictions = interactive_evictions(app.runs(), roles, since, until)
    finally:
        app.stop()
    out = {"idle_ms": idle, "busy_ms": busy, "evictions": evictions, "job_state": state["state"],
           "job_fps": round((state["progress"] - job["progress"]) * FRAMES / busy_s, 2)}
    if verbose:
        print(f"job nice {nice}: idle p95 {ms(percentile(idle, 95))} ms, busy p50 {ms(percentile(busy, 50))} ms, "
              f"p95 {ms(percentile(busy, 95))} ms; job {out['job_fps']} frames/s ({state['state']})", flush=True)
    return out


def run(verbose: bool = True, calls: int = CALLS, budget: str | None = None) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-interactive-"))
    video, photo = _video(folder), _photo(folder)
    same = _variant(folder, video, photo, calls, budget or BUDGET, 0, verbose)
    lower = _variant(folder, video, photo, calls, budget or BUDGET, None, verbose)
    idle, busy = lower["idle_ms"], lower["busy_ms"]
    save_series("interactive", {"idle_ms": [ms(v) for v in idle], "busy_ms": [ms(v) for v in busy],
                                "same_priority_busy_ms": [ms(v) for v in same["busy_ms"]]})
    idle_p95, busy_p95 = percentile(idle, 95), percentile(busy, 95)
    return {"scenario": "interactive", "idle_p50_ms": ms(percentile(idle, 50)), "idle_p95_ms": ms(idle_p95),
            "busy_p50_ms": ms(percentile(busy, 50)), "busy_p95_ms": ms(busy_p95),
            "ratio_p95": round(busy_p95 / idle_p95, 2), "interactive_evictions": lower["evictions"],
            "calls": calls, "job_ran_throughout": lower["job_state"] == "running", "budget": budget or BUDGET,
            "job_fps": lower["job_fps"],
            "same_priority": {"idle_p95_ms": ms(percentile(same["idle_ms"], 95)),
                              "busy_p50_ms": ms(percentile(same["busy_ms"], 50)),
                              "busy_p95_ms": ms(percentile(same["busy_ms"], 95)),
                              "ratio_p95": round(percentile(same["busy_ms"], 95) / percentile(same["idle_ms"], 95), 2),
                              "job_fps": same["job_fps"], "interactive_evictions": same["evictions"]}}
