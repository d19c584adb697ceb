"""A full disk during a video job: the job fails saying so, leaves no result that looks finished
and no half-written files, and the next job works.

The disk is real: a 3 MiB tmpfs mounted over the jobs folder (needs root, as in CI).
"""
import os
import subprocess

import numpy as np
import pytest

from engine import Engine, JobKind
from video_helpers import make_test_video
from engine.media.video_job import process_video
from tiny_models import block_spec, forward

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


def copy_frames(ctx):
    def transform(frames):
        ctx.call("net", forward)   # a model lease per chunk, as real video jobs take
        return frames
    return str(process_video(ctx, ctx.input("video"), transform, chunk_frames=8))


@pytest.fixture
def small_disk(tmp_path):
    jobs = tmp_path / "data" / "jobs"
    jobs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(jobs)], check=True)
    try:
        yield tmp_path / "data"
    finally:
        subprocess.run(["umount", "-l", str(jobs)], check=True)


def noise(i, width=320, height=240):
    return np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_job_that_fills_the_disk_fails_cleanly_and_the_next_one_works(small_disk, tmp_path):
    big = make_test_video(tmp_path / "noise.mp4", frames=40, width=320, height=240, draw=noise, audio=False)
    small = make_test_video(tmp_path / "small.mp4", frames=10, width=64, height=48, audio=True)
    assert big.stat().st_size < 3 * 2**20 < 2 * big.stat().st_size   # the input fits, its copy does not

    engine = Engine(small_disk, specs=[block_spec(tmp_path, "net", 1)], job_options={"job_threads": 1})
    engine.jobs.register(JobKind("copy_video", "net", copy_frames))
    engine.jobs.start()
    try:
        failed = list(engine.jobs.follow(engine.jobs.submit("copy_video", inputs={"video": big})))[-1]
        folder = engine.jobs.job_dir(failed["id"])
        assert failed["state"] == "failed"
        assert failed["error"].startswith("The disk is full") and "Traceback" not in failed["error"]
        assert not (folder / "result.mp4").exists() and failed["result"] is None
        assert not [p for p in folder.rglob("*") if p.name.endswith((".part", ".txt"))]

        # Nothing of the failed job is in the way of the next (its finished segments stay for a retry).
        done = list(engine.jobs.follow(engine.jobs.submit("copy_video", inputs={"video": small})))[-1]
        assert done["state"] == "done", done["error"]
        assert os.path.getsize(done["result"]) > 0
    finally:
        engine.jobs.stop()
