"""An upscale video job whose process is killed mid-way resumes from its last chunk, frame-exact."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from engine import Engine
from engine.media.video import probe
from video_helpers import decode_all, make_test_video
import tabs.upscale
from tabs.upscale import model as up


ROOT = Path(__file__).resolve().parents[1]

# A worker that dies by SIGKILL right after the checkpoint of its second chunk: no cleanup runs,
# as when the machine loses power or the OOM killer strikes.
CRASHING_WORKER = textwrap.dedent("""
    import os, signal, sys
    from engine import Engine, JobKind
    from engine.jobs import JobContext
    import tabs.upscale

    save = JobContext.save_checkpoint
    def save_then_die(ctx, **values):
        save(ctx, **values)
        if values.get("chunks_done") == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    JobContext.save_checkpoint = save_then_die

    engine = Engine(sys.argv[1], specs=tabs.upscale.specs(), job_options={"job_threads": 1})
    for kind in tabs.upscale.job_kinds():
        engine.jobs.register(kind)
    job_id = engine.jobs.submit("upscale_video", {"scale": 2, "model": "fast", "chunk_frames": 3},
                                inputs={"video": sys.argv[2]})
    print(job_id, flush=True)
    engine.jobs.start()
    for _ in engine.jobs.follow(job_id):
        pass
""")


def engine_on(data):
    engine = Engine(data, specs=tabs.upscale.specs(), job_options={"job_threads": 1})
    for kind in tabs.upscale.job_kinds():
        engine.jobs.register(kind)
    return engine


def finish(engine, job_id):
    engine.jobs.start()
    try:
        return list(engine.jobs.follow(job_id))[-1]
    finally:
        engine.jobs.stop()


def test_a_killed_upscale_job_resumes_at_its_third_chunk_with_identical_frames(tmp_path):
    source = make_test_video(tmp_path / "in.mp4", frames=10, width=96, height=64, fps=10, audio=True)

    reference_engine = engine_on(tmp_path / "reference")
    reference = finish(reference_engine, reference_engine.jobs.submit(
        "upscale_video", {"scale": 2, "model": "fast", "chunk_frames": 3}, inputs={"video": source}))
    assert reference["state"] == "done", reference["error"]

    data = tmp_path / "data"
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WORKER, str(data), str(source)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                             timeout=300)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    job_id = crashed.stdout.split()[0]

    engine = engine_on(data)
    left = engine.jobs.get(job_id)
    assert left["state"] == "running" and left["checkpoint"]["chunks_done"] == 2
    job = finish(engine, job_id)
    assert job["state"] == "done", job["error"]
    assert job["resumed_from_frame"] == 6             # two chunks of 3 were already on disk
    assert job["runs"][-1]["models"].count(up.UPSCALE_FAST) == 2   # only chunks 3 and 4 ran again
    info = probe(job["result"])
    assert (info.width, info.height, info.frames, info.has_audio) == (192, 128, 10, True)
    np.testing.assert_array_equal(decode_all(job["result"]), decode_all(reference["result"]))
