"""Start the real app (launch.py) in a subprocess and wait until it answers; or talk to it
through gradio_client for as long as a with block lasts."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{proc.log_path.read_text()[-5000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (a login wall is an answer)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.25)  # polling a server that is starting; no result depends on this delay
    raise TimeoutError(f"{url} did not answer within {seconds} s")


def start_app(data_dir: Path, *args: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    # The app's output goes to a file: a pipe nobody reads fills up and blocks the server's logging.
    log_path = Path(data_dir).parent / f"app-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--port", str(port),
                                 "--data-dir", str(data_dir), *args],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = log_path
    url = f"http://127.0.0.1:{port}/"
    wait_for_http(url, proc)
    return proc, url


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextmanager
def app_client(data_dir: Path, *args: str) -> Iterator[Client]:
    """A gradio_client Client on the real app started with these flags; the app stops on exit."""
    proc, url = start_app(data_dir, *args)
    try:
        yield Client(url, verbose=False)
    finally:
        stop_app(proc)
