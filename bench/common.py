"""What the scenarios share: statistics, the machine, child processes, the app in a subprocess,
memory samplers, synthetic torch models of a given size, and where plot data goes.

Scenarios return a dict of the issue's fields (printed as the last line). Series for plots
(memory over time, latency lists) go to a side file, not into that line: when `python -m bench
all` runs a scenario it sets WIMMEL_BENCH_SERIES to a folder and each scenario writes
<folder>/<scenario>.json there.
"""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024**2


# ---- statistics ----

def median(values) -> float:
    return statistics.median(values)


def percentile(values, q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def mb(nbytes: float) -> float:
    return round(nbytes / MiB, 1)


# ---- the machine ----

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}"}
    for name in ("torch", "onnxruntime", "gradio", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing package is simply not reported
            info[name] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    return info


# ---- series for plots ----

def save_series(scenario: str, data: dict) -> None:
    folder = os.environ.get("WIMMEL_BENCH_SERIES")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{scenario}.json").write_text(json.dumps(data))


# ---- child processes ----

def child_json(module: str, *args: str, timeout: float | None = None, env: dict | None = None) -> dict:
    """Run `python -m MODULE ARGS` in a fresh process; its last stdout line is JSON."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{module} {' '.join(args)} failed ({done.returncode}):\n{tail}")
    return json.loads(lines[-1])


def read_hwm(pid: int | str = "self") -> int | None:
    """Peak RSS (VmHWM) of a process in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_parts() -> tuple[int | None, int | None]:
    """(RssAnon, RssFile) of this process in bytes: heap and arenas against mapped files."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return tuple(int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile"))
    except (OSError, KeyError, ValueError):
        return None, None


class RssSampler:
    """RSS of a process (and, with children=True, of its child processes too) and its thread
    count every `every_s`."""

    def __init__(self, pid: int | None = None, every_s: float = 0.1, children: bool = False):
        self.process = psutil.Process(pid)
        self.name = self.process.name()
        self.every_s, self.children = every_s, children
        self.t0 = time.monotonic()
        self.times: list[float] = []
        self.rss: list[int] = []  # the process alone
        self.tree: list[int] = []  # with its children
        self.threads: list[int] = []  # the process's threads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        while True:
            try:
                own = self.process.memory_info().rss
                threads = self.process.num_threads()
                tree = own
                if self.children:
                    for child in self.process.children(recursive=True):
                        try:
                            # A child forked but not yet exec'd shares the parent's pages and
                            # would count them twice: only children running another program.
                            if child.name() != self.name:
                                tree += child.memory_info().rss
                        except psutil.Error:
                            pass
            except psutil.Error:
                return
            self.times.append(round(time.monotonic() - self.t0, 3))
            self.rss.append(own)
            self.tree.append(tree)
            self.threads.append(threads)
            if self._stop.wait(self.every_s):
                return

    def series_mb(self, tree: bool = False) -> dict:
        return {"t": self.times, "mb": [mb(v) for v in (self.tree if tree else self.rss)]}


# ---- the app in a subprocess ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """launch.py in a subprocess, its log in a file under the data dir (a pipe nobody reads
    would fill and stall the server)."""

    def __init__(self, data_dir: Path, *args: str):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = self.data_dir / "app.log"
        self._log = open(self.log_path, "w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--port", str(self.port),
                                      "--data-dir", str(self.data_dir), *args],
                                     cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False",
                                          "HF_HUB_OFFLINE": "1"})

    def wait_page(self, seconds: float = 180) -> float:
        """Seconds from the start of the process until the page answers HTTP 200."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - self.started
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.02)  # polling a starting server: the resolution of first_page_s
        raise TimeoutError(f"{self.url} did not answer within {seconds} s:\n{self.log_tail()}")

    def wait_preloaded(self, client, seconds: float = 180) -> None:
        """Until every interactive model the app preloads is resident (or failed)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status = client.predict(api_name="/system_status")
            preloads = [r for r in status["runs"] if r["capability"].startswith("preload")]
            interactive = [m for m in status["models"] if m["role"] == "interactive"]
            if preloads and len({r["capability"] for r in preloads}) >= len({m["name"] for m in interactive}):
                return
            time.sleep(0.5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def runs(self) -> list[dict]:
        """Every run record the app wrote (runs.jsonl under its data dir)."""
        path = self.data_dir / "runs.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# ---- the engine ----

def reload_seconds(engine, model: str, times: int) -> list[float]:
    """Seconds of `times` loads of `model` through the engine's pool, each after unloading it."""
    loads = []
    for _ in range(times):
        engine.pool.unload(model)
        started = time.perf_counter()
        engine.preload(model)
        loads.append(time.perf_counter() - started)
    return loads


# ---- synthetic torch models ----

def stack(mib: int, width: int = 1024):
    """A stack of square linear layers holding `mib` MiB of float32 weights."""
    import torch

    layers = max(1, round(mib * MiB / (width * width * 4)))
    return torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])


def save_stack(path: Path, mib: int) -> Path:
    from safetensors.torch import save_file

    if not path.exists():
        save_file(stack(mib).state_dict(), str(path))
    return path


def stack_loader(path: Path, mib: int, loads: list | None = None):
    """The engine's way: build on the meta device, assign the file's (memory-mapped) tensors."""
    from tests.tiny_models import meta_loader

    return meta_loader(path, lambda: stack(mib), loads)


def stack_spec(path: Path, name: str, mib: int, role: str = "heavy", loads: list | None = None):
    from engine import ModelSpec

    save_stack(path, mib)
    return ModelSpec(name=name, role=role, runtime="torch", loader=stack_loader(path, mib, loads),
                     source=str(path), estimate_bytes=mib * MiB, device="cpu")
