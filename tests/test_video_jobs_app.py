"""Video jobs through the real app: progress, cancel, bad input, and a killed server that resumes."""
import time

import numpy as np
import pytest
from gradio_client import Client, handle_file

from app_process import start_app, stop_app
from video_helpers import decode_all, face_video


def jobs(client):
    return client.predict(api_name="/list_jobs")["jobs"]


def wait_until(predicate, client, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate(jobs(client))
        if found:
            return found
        time.sleep(0.05)  # polling the API from outside; no result depends on this delay
    raise TimeoutError("the jobs never reached the expected state")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return face_video(tmp_path_factory.mktemp("video") / "faces.mp4", frames=96, fps=24)


def test_a_killed_server_resumes_the_job_from_its_last_chunk(tmp_path, video):
    data = tmp_path / "data"
    first, url = start_app(data, "--chunk-frames", "8")
    try:
        client = Client(url, verbose=False)
        client.submit(handle_file(str(video)), "blur", api_name="/blur_faces_video")
        job = wait_until(lambda js: next((j for j in js if 0 < j["progress"] < 0.5), None), client)
    finally:
        first.kill()  # SIGKILL: no graceful stop, the job is cut off mid-way
        first.wait(30)

    second, url = start_app(data, "--chunk-frames", "8")
    try:
        client = Client(url, verbose=False)
        resumed = wait_until(lambda js: next((j for j in js if j["id"] == job["id"] and j["state"] == "done"),
                                             None), client)
        assert resumed["resumed_from_frame"] > 0 and resumed["resumed_from_frame"] % 8 == 0
        # The same video again, uninterrupted, gives exactly the same frames.
        fresh = client.predict(handle_file(str(video)), "blur", api_name="/blur_faces_video")
        fresh_path = fresh["video"] if isinstance(fresh, dict) else fresh
        assert np.array_equal(decode_all(resumed["result"]), decode_all(fresh_path))
    finally:
        stop_app(second)


def test_cancel_bad_input_and_the_server_keeps_serving(tmp_path, video):
    proc, url = start_app(tmp_path / "data", "--chunk-frames", "8")
    try:
        client = Client(url, verbose=False)
        running = client.submit(handle_file(str(video)), "pixelate", api_name="/blur_faces_video")
        wait_until(lambda js: [j for j in js if j["state"] == "running"], client)
        queued = client.submit(handle_file(str(video)), "blur", api_name="/blur_faces_video")
        (waiting,) = wait_until(lambda js: [j for j in js if j["state"] == "queued"], client)
        cancelled = client.predict(waiting["id"], api_name="/cancel_job")
        assert cancelled["state"] == "cancelled"
        with pytest.raises(Exception, match="cancelled"):
            queued.result(timeout=60)
        assert running.result(timeout=120)

        broken = tmp_path / "broken.mp4"  # an MP4 header over random bytes: nothing decodes
        broken.write_bytes(video.read_bytes()[:64] + np.random.default_rng(0).bytes(50_000))
        with pytest.raises(Exception, match="(?i)video"):
            client.predict(handle_file(str(broken)), "blur", api_name="/blur_faces_video")
        # Refused when submitted: no job was queued for it.
        assert sorted(j["state"] for j in jobs(client)) == ["cancelled", "done"]
        with pytest.raises(Exception, match="no job"):
            client.predict("nope", api_name="/cancel_job")
    finally:
        stop_app(proc)
