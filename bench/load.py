"""load: 20 concurrent API clients mixing interactive and long endpoints for a bounded time.

The real app (launch.py --budget B) runs in a subprocess. CLIENTS gradio_client clients, each in
its own thread with its own connection, call for SECONDS seconds:
- 16 interactive clients, each going round detect_faces, nsfw_check, ocr, speak and
  detect_speech (each client starts at a different one), one request after another;
- 4 long clients (2 blur_faces_video, 2 stylize_video on a 1 s 480x360 video), each submitting
  a job and waiting for its video before submitting the next.
When the time is up no new request starts; the long jobs under way are waited for (every long
job must end). Clients wait up to CLIENT_TIMEOUT_S for each HTTP exchange: gradio_client's
default (httpx's 5 s) times out uploads while 20 requests land at once on two cores.

- clients, seconds, requests, errors (requests that raised), user_visible_oom (errors that
  speak of memory), long_jobs, long_jobs_ended (jobs in the app's list that reached done).
- peak_rss_mb: the server process's peak RSS, whole process (Python, Gradio and every model):
  the larger of its VmHWM and its RSS sampled every 0.25 s; peak_tree_mb: the samples with its
  child processes (ffmpeg) added;
  engine_peak_mb: the engine's resident models (system_status), sampled each second.
  budget_mb: the --budget given; within_budget: peak_rss_mb <= budget_mb.
- endpoints: per endpoint, n, p50_ms and p95_ms of the client-side latency (upload, queue, run,
  answer; for long endpoints the whole job).

`python -m bench load [--budget cpu=4GiB]`.
"""
from __future__ import annotations

import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .common import App, RssSampler, mb, ms, percentile, read_hwm, save_series

CLIENTS = 20
LONG_CLIENTS = ("blur_faces_video", "blur_faces_video", "stylize_video", "stylize_video")
INTERACTIVE = ("detect_faces", "nsfw_check", "ocr", "speak", "detect_speech")
SECONDS = 75
CLIENT_TIMEOUT_S = 120
BUDGET = "cpu=4GiB"
SENTENCE = "Twenty clients at once, and every one of them gets an answer."


def _inputs(folder: Path) -> dict:
    import skimage.data
    from PIL import Image, ImageDraw, ImageFont

    from tests.video_helpers import make_test_video

    photo = folder / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    text = Image.new("RGB", (512, 256), "white")
    draw = ImageDraw.Draw(text)
    for row, line in enumerate(["Load test", "twenty clients"]):
        draw.text((20, 40 + row * 100), line, fill="black", font=ImageFont.load_default(size=48))
    text.save(folder / "text.png")
    face = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((200, 200)))

    def frame(i: int) -> np.ndarray:
        out = np.full((360, 480, 3), 90, np.uint8)
        left = 20 + (4 * i) % 240
        out[60:260, left:left + 200] = face
        return out

    video = make_test_video(folder / "faces.mp4", frames=24, width=480, height=360, fps=24, draw=frame)
    return {"photo": str(photo), "text": str(folder / "text.png"), "video": str(video)}


def _call(client, endpoint: str, files: dict):
    from gradio_client import handle_file

    if endpoint == "detect_faces":
        return client.predict(handle_file(files["photo"]), api_name="/detect_faces")
    if endpoint == "nsfw_check":
        return client.predict(handle_file(files["photo"]), api_name="/nsfw_check")
    if endpoint == "ocr":
        return client.predict(handle_file(files["text"]), api_name="/ocr")
    if endpoint == "speak":
        return client.predict(SENTENCE, 1.0, api_name="/speak")
    if endpoint == "detect_speech":
        return client.predict(handle_file(files["speech"]), 0.5, 0.1, api_name="/detect_speech")
    if endpoint == "blur_faces_video":
        return client.predict(handle_file(files["video"]), "blur", api_name="/blur_faces_video")
    if endpoint == "stylize_video":
        return client.predict(handle_file(files["video"]), "style 3", None, api_name="/stylize_video")
    raise ValueError(endpoint)


def _is_memory_error(message: str) -> bool:
    message = message.lower()
    return any(word in message for word in ("out of memory", "not enough memory", "memory"))


def run(verbose: bool = True, budget: str | None = None, seconds: float = SECONDS, clients: int = CLIENTS) -> dict:
    import httpx
    from gradio_client import Client

    from engine.devices import parse_budget

    budget = budget or BUDGET
    budget_bytes = parse_budget(budget)["cpu"]
    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-load-"))
    files = _inputs(folder)
    app = App(folder / "data", "--budget", budget)
    results: list[dict] = []
    lock = threading.Lock()
    engine_samples: list[tuple[float, float]] = []
    try:
        app.wait_page()
        first = Client(app.url, verbose=False)
        app.wait_preloaded(first)
        files["speech"] = first.predict(SENTENCE, 1.0, api_name="/speak")
        for endpoint in INTERACTIVE:  # one of each first: nothing below measures a first call
            _call(first, endpoint, files)

        roles = list(LONG_CLIENTS[:min(len(LONG_CLIENTS), clients)])
        roles += [INTERACTIVE[i % len(INTERACTIVE)] for i in range(clients - len(roles))]
        connections: list = [None] * clients

        def connect(i: int) -> None:
            # read=600: the event stream of a long job may stay quiet for minutes.
            timeout = httpx.Timeout(CLIENT_TIMEOUT_S, read=600)
            connections[i] = Client(app.url, verbose=False, httpx_kwargs={"timeout": timeout})

        threads = [threading.Thread(target=connect, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        start = threading.Event()
        state = {"end": 0.0}

        def client_loop(i: int) -> None:
            rng = random.Random(i)
            start.wait()
            n = 0
            while time.monotonic() < state["end"]:
                if roles[i] in INTERACTIVE:
                    endpoint = INTERACTIVE[(INTERACTIVE.index(roles[i]) + n) % len(INTERACTIVE)]
                else:
                    endpoint = roles[i]
                n += 1
                began = time.perf_counter()
                error = None
                try:
                    _call(connections[i], endpoint, files)
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    error = f"{type(exc).__name__}: {exc}"[:300]
                with lock:
                    results.append({"client": i, "endpoint": endpoint, "t": round(began - t0, 2),
                                    "ms": ms(time.perf_counter() - began), "error": error})
                if rng.random() < 0.1:
                    time.sleep(rng.uniform(0, 0.5))  # now and then a client pauses, as people do

        def watch_engine() -> None:
            while not start.is_set() or time.monotonic() < state["end"] or any(t.is_alive() for t in workers):
                try:
                    status = first.predict(api_name="/system_status")
                    cpu = next(d for d in status["devices"] if d["name"] == "cpu")
                    engine_samples.append((round(time.perf_counter() - t0, 1), mb(cpu.get("engine", 0))))
                except Exception:  # noqa: BLE001 - a missed sample is no result
                    pass
                time.sleep(1.0)

        workers = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
        for worker in workers:
            worker.start()
        with RssSampler(app.proc.pid, every_s=0.25, children=True) as sampler:
            t0 = time.perf_counter()
            state["end"] = time.monotonic() + seconds
            watcher = threading.Thread(target=watch_engine, daemon=True)
            watcher.start()
            start.set()
            if verbose:
                print(f"{clients} clients for {seconds:.0f} s ...", flush=True)
            for worker in workers:
                worker.join(seconds + 600)  # long clients finish the job they have under way
            stuck = sum(w.is_alive() for w in workers)
            watcher.join(5)
        # VmHWM alone would miss peaks: the engine's probe resets it at each run it measures.
        peak_rss = max(read_hwm(app.proc.pid) or 0, max(sampler.rss, default=0))
        jobs = first.predict(api_name="/list_jobs")["jobs"]
    finally:
        app.stop()

    errors = [r for r in results if r["error"]]
    endpoints = {}
    for name in INTERACTIVE + tuple(sorted(set(LONG_CLIENTS))):
        times = [r["ms"] for r in results if r["endpoint"] == name and not r["error"]]
        endpoints[name] = {"n": len(times), "p50_ms": round(percentile(times, 50), 1) if times else None,
                           "p95_ms": round(percentile(times, 95), 1) if times else None}
    if verbose:
        for name, row in endpoints.items():
            print(f"{name}: {row}", flush=True)
        for r in errors[:5]:
            print(f"error: {r}", flush=True)
    save_series("load", {"latencies_ms": {k: [r["ms"] for r in results if r["endpoint"] == k and not r["error"]]
                                          for k in endpoints},
                         "memory": {**sampler.series_mb(tree=True), "process_mb": sampler.series_mb()["mb"]},
                         "engine": engine_samples, "budget_mb": mb(budget_bytes)})
    long_jobs = [j for j in jobs if j["capability"] in LONG_CLIENTS]
    return {"scenario": "load", "clients": clients, "seconds": seconds, "requests": len(results),
            "errors": len(errors) + stuck, "user_visible_oom": sum(_is_memory_error(r["error"]) for r in errors),
            "long_jobs": len(long_jobs), "long_jobs_ended": sum(j["state"] == "done" for j in long_jobs),
            "peak_rss_mb": mb(peak_rss), "peak_tree_mb": mb(max(sampler.tree, default=0)),
            "engine_peak_mb": max((v for _, v in engine_samples), default=None),
            "budget_mb": mb(budget_bytes), "within_budget": peak_rss <= budget_bytes,
            "endpoints": endpoints, "error_samples": [r["error"] for r in errors[:3]],
            "client_timeout_s": CLIENT_TIMEOUT_S}
