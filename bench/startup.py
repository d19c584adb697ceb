"""startup: launch.py start to the first HTTP 200, and to the first detect_faces answer.

Each repeat starts `python launch.py` in a fresh process with a fresh data dir (no footprints
learned yet), polls the page every 20 ms until it answers 200 (first_page_s), then a
gradio_client Client connects and calls detect_faces on a 512 px photo (first_answer_s, from
the same start). Median of REPEATS; the app is stopped between repeats.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import App, median, save_series

REPEATS = 3


def run(verbose: bool = True, repeats: int = REPEATS) -> dict:
    from gradio_client import Client, handle_file

    from .interactive import _photo

    folder = Path(tempfile.mkdtemp(prefix="wimmel-bench-startup-"))
    photo = _photo(folder)
    pages, answers = [], []
    for r in range(repeats):
        app = App(folder / f"data{r}")
        try:
            pages.append(app.wait_page())
            client = Client(app.url, verbose=False)
            _, found = client.predict(handle_file(photo), api_name="/detect_faces")
            answers.append(time.perf_counter() - app.started)
            assert len(found["faces"]) == 1
        finally:
            app.stop()
        if verbose:
            print(f"start {r + 1}: page {pages[-1]:.2f} s, first answer {answers[-1]:.2f} s", flush=True)
    save_series("startup", {"first_page_s": pages, "first_answer_s": answers})
    return {"scenario": "startup", "first_page_s": round(median(pages), 2),
            "first_answer_s": round(median(answers), 2), "repeats": repeats}
