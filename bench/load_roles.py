"""bench load's parts: the inputs, the logins, the clients' roles and loops, and the server's
thread count. One phase (`run_phase`) is N gradio_client clients against a running app for S
seconds; bench/load.py runs the phases and reports them.
"""
from __future__ import annotations

import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .common import ROOT, RssSampler, mb, ms

INTERACTIVE = ("detect_faces", "nsfw_check", "ocr", "speak", "detect_speech")
JOBS = ("blur_faces_video", "stylize_video")
SENTENCE = "Fifty clients at once, and every one of them gets an answer."
# gradio_client's default (httpx's 5 s) times out uploads while dozens of requests land at once
# on two cores; read=600: the event stream of a long job may stay quiet for minutes.
CLIENT_TIMEOUT_S = 120
READ_TIMEOUT_S = 600
# A person looks at an answer before asking again. Without a think time a closed loop of clients
# keeps the queue always full: latency is then queue length x service time (it grows with the
# number of clients whatever the server does) and measures how many clients there are, not how
# well they are served. 1-3 s is a glance at a detection or a transcript.
THINK_S = (1.0, 3.0)
START_SPREAD_S = 3.0   # clients arrive over the first seconds, not in one burst of uploads
DRAIN_S = 900          # after the time is up, how long a job under way may still take


def make_inputs(folder: Path) -> dict:
    import skimage.data
    from PIL import Image, ImageDraw, ImageFont

    from tests.video_helpers import make_test_video

    photo = folder / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    text = Image.new("RGB", (512, 256), "white")
    draw = ImageDraw.Draw(text)
    for row, line in enumerate(["Load test", "fifty clients"]):
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


def call(client, endpoint: str, files: dict):
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


def is_memory_error(message: str) -> bool:
    return "memory" in message.lower()


# ---- logins ----

def write_logins(folder: Path, users: list[str], admin: str) -> tuple[Path, dict[str, str]]:
    """An --auth-file for these users and the admin, with fresh random passwords; the hashes come
    from launch.py hash-password, as a person would make them (README, "Several logins")."""
    passwords = {name: secrets.token_urlsafe(12) for name in [*users, admin]}
    lines = []
    for name, password in passwords.items():
        done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "hash-password", name, "--stdin"],
                              cwd=ROOT, input=password + "\n", capture_output=True, text=True, check=True)
        lines.append(done.stdout.strip())
    path = folder / "logins.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, passwords


def connect(url: str, user: str, password: str):
    import httpx
    from gradio_client import Client

    timeout = httpx.Timeout(CLIENT_TIMEOUT_S, read=READ_TIMEOUT_S)
    return Client(url, auth=(user, password), verbose=False, httpx_kwargs={"timeout": timeout})


def roles(clients: int, users: list[str]) -> list[dict]:
    """clients // 3 job clients (a third, rounded down), the rest interactive; each kind spread
    round-robin over the users, so every user has job clients once there are as many as users.
    Job client k starts with JOBS[k % 2]; interactive client k at INTERACTIVE[k % 5]."""
    jobs = clients // 3
    out = [{"role": "job", "user": users[k % len(users)], "first": k} for k in range(jobs)]
    out += [{"role": "interactive", "user": users[k % len(users)], "first": k} for k in range(clients - jobs)]
    return out


# ---- the server's threads ----

def threads_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def settle_threads(pid: int, quiet_s: float = 11.0, most_s: float = 30.0) -> int | None:
    """The thread count once it has not changed for quiet_s (at most most_s): anyio's worker
    threads, which run Gradio's sync handlers, exit after 10 s idle, so 11 s of no change is idle."""
    started = last_change = time.monotonic()
    count = threads_of(pid)
    while time.monotonic() - last_change < quiet_s and time.monotonic() - started < most_s:
        time.sleep(0.25)
        now = threads_of(pid)
        if now != count:
            count, last_change = now, time.monotonic()
    return count


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of the children it has waited for (its ffmpeg runs), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")   # utime stime cutime cstime


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]   # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), sum(ticks) / os.sysconf("SC_CLK_TCK")


# ---- one phase ----

def run_phase(url: str, pid: int, plan: list[dict], passwords: dict, files: dict, seconds: float, admin,
              verbose: bool = True) -> dict:
    """Connect len(plan) clients (logins outside the measured time), wait until the server's
    threads are idle, then run the clients for `seconds` and wait for every job under way. Meanwhile
    the server's RSS and threads are sampled every 0.25 s and the admin client reads the engine's
    memory each second."""
    connections: list = [None] * len(plan)
    failed_logins: list[str] = []

    def login(i: int) -> None:
        try:
            connections[i] = connect(url, plan[i]["user"], passwords[plan[i]["user"]])
        except Exception as exc:  # noqa: BLE001 - a client that cannot log in is an error, counted
            failed_logins.append(f"login {plan[i]['user']}: {type(exc).__name__}: {exc}"[:300])

    threads = [threading.Thread(target=login, args=(i,)) for i in range(len(plan))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    results: list[dict] = []
    engine_samples: list[tuple[float, float]] = []
    lock = threading.Lock()
    start = threading.Event()
    state = {"end": 0.0, "t0": 0.0}

    def client_loop(i: int) -> None:
        rng = random.Random(i)
        who = plan[i]
        start.wait()
        time.sleep(rng.uniform(0, START_SPREAD_S))
        n = who["first"]
        while connections[i] is not None and time.monotonic() < state["end"]:
            names = JOBS if who["role"] == "job" else INTERACTIVE
            endpoint = names[n % len(names)]
            n += 1
            began = time.perf_counter()
            error = None
            try:
                call(connections[i], endpoint, files)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                error = f"{type(exc).__name__}: {exc}"[:300]
            with lock:
                results.append({"client": i, "user": who["user"], "role": who["role"], "endpoint": endpoint,
                                "t": round(began - state["t0"], 2), "ms": ms(time.perf_counter() - began),
                                "error": error})
            if who["role"] == "interactive":
                time.sleep(max(0.0, min(rng.uniform(*THINK_S), state["end"] - time.monotonic())))

    def watch_engine() -> None:
        while time.monotonic() < state["end"] or any(w.is_alive() for w in workers):
            try:
                status = admin.predict(api_name="/system_status")
                cpu = next(d for d in status["devices"] if d["name"] == "cpu")
                engine_samples.append((round(time.perf_counter() - state["t0"], 1), mb(cpu.get("engine", 0))))
            except Exception:  # noqa: BLE001 - a missed sample is no result
                pass
            time.sleep(1.0)

    workers = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(len(plan))]
    for worker in workers:
        worker.start()
    threads_idle = settle_threads(pid)
    with RssSampler(pid, every_s=0.25, children=True) as memory:
        state["t0"] = time.perf_counter()
        state["end"] = time.monotonic() + seconds
        watcher = threading.Thread(target=watch_engine, daemon=True)
        watcher.start()
        cpu_before = (cpu_seconds(pid), sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), machine_cpu())
        start.set()
        if verbose:
            jobs = sum(p["role"] == "job" for p in plan)
            print(f"{len(plan)} clients ({jobs} job, {len(plan) - jobs} interactive; {threads_idle} server threads "
                  f"idle) for {seconds:.0f} s ...", flush=True)
        deadline = time.monotonic() + seconds + DRAIN_S
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))   # job clients finish the job under way
        stuck = sum(w.is_alive() for w in workers)
        wall_s = round(time.perf_counter() - state["t0"], 1)
        machine = machine_cpu()
        # Where the cores went: the server (with its finished ffmpeg runs), these clients (the same
        # machine's cores: each gradio_client uploads, polls and parses), the machine as a whole.
        cpu = {"server_s": round(cpu_seconds(pid) - cpu_before[0], 1),
               "clients_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_before[1], 1),
               "machine_busy": round((machine[0] - cpu_before[2][0]) / max(1e-9, machine[1] - cpu_before[2][1]), 3)}
        watcher.join(5)
    if not stuck:   # a stuck client's connection is left to the process's end
        for client in connections:
            if client is not None:
                client.close()
    return {"results": results, "stuck": stuck, "failed_logins": failed_logins, "engine": engine_samples,
            "wall_s": wall_s, "cpu": cpu, "memory": memory, "threads_idle": threads_idle,
            "threads_max": max(memory.threads, default=None),
            "threads_median": statistics.median(memory.threads) if memory.threads else None,
            "threads_series": {"t": memory.times, "threads": memory.threads}}
