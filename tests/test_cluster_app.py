"""The app with --cluster local, driven through gradio_client like any API user: a video job runs
on a Ray worker actor (its own engine, in its own process), its chunks come home, and the System
tab's status lists the worker. The cluster's own rules (routing, a killed worker) are in
test_cluster.py."""

import psutil

from app_process import app_client
from gradio_client import handle_file
from video_helpers import decode_all, face_video


def ray_processes() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name", "cmdline"])
            if any(part in " ".join(p.info["cmdline"] or []) for part in ("raylet", "gcs_server"))}


def test_a_video_job_runs_on_a_cluster_worker_end_to_end(tmp_path):
    video = face_video(tmp_path / "faces.mp4", frames=48, fps=24)
    before = ray_processes()
    with app_client(tmp_path / "data", "--cluster", "local", "--cluster-workers", "1",
                    "--chunk-frames", "16") as client:
        [worker] = client.predict(api_name="/system_status")["workers"]
        assert worker["id"] == "cpu-0" and worker["alive"] and worker["device"] == "cpu"
        assert worker["pid"] and worker["node"]
        started = ray_processes() - before
        assert started, "the app started no Ray processes"

        result = client.predict(handle_file(str(video)), "blur", api_name="/blur_faces_video")
        frames = decode_all(result)
        assert frames.shape[0] == 48 and frames.shape[1:3] == decode_all(video).shape[1:3]

        [job] = client.predict(api_name="/list_jobs")["jobs"]
        assert job["state"] == "done" and job["worker"] == "cpu-0" and job["moves"] == 0
        [worker] = client.predict(api_name="/system_status")["workers"]
        assert "face-detector" in worker["models"] and worker["job"] is None
    # Stopping the app takes its Ray instance with it: nothing is left running.
    still = {pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"}
    assert not still, f"Ray processes left after the app stopped: {still}"
