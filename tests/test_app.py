"""The real app in a subprocess, driven through gradio_client like any API user."""
import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from gradio_client import Client, handle_file
from PIL import Image

import launch
from app_process import ROOT, start_app, stop_app
from bench.load_roles import threads_of

AUTH = ("tester", "s3cret-pass")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    proc, url = start_app(tmp_path_factory.mktemp("data"), "--auth", ":".join(AUTH), "--budget", "cpu=4GiB")
    try:
        yield proc, url
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def app_url(app):
    return app[1]


# Gradio builds every block's config for a session's first event, on its event loop (45 ms for
# this app's 834 blocks, about 0.1 s while handlers run): sixty new sessions at once wait seconds
# for their joins, past httpx's default 5 s, and a join that timed out may still queue its job.
PATIENT = {"timeout": 60}


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, auth=AUTH, verbose=False, httpx_kwargs=PATIENT)


def save(array: np.ndarray, path: Path) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def test_detect_faces_through_the_api(client, tmp_path):
    annotated, result = client.predict(handle_file(save(skimage.data.astronaut(), tmp_path / "a.png")),
                                       api_name="/detect_faces")
    faces = result["faces"]
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0]["box"]
    assert abs(x1 - 181) < 12 and abs(y1 - 62) < 12 and abs(x2 - 268) < 12 and abs(y2 - 172) < 12
    assert faces[0]["score"] > 0.99
    assert len(faces[0]["landmarks"]) == 5
    drawn = np.asarray(Image.open(annotated))
    assert drawn.shape[:2] == (512, 512)

    _, none = client.predict(handle_file(save(skimage.data.coffee(), tmp_path / "c.png")),
                             api_name="/detect_faces")
    assert none == {"faces": []}


def settled_threads(pid: int, quiet_s: int = 5, seconds: float = 90) -> int:
    """The process's thread count once it stays the same for quiet_s seconds (models still
    preloading start threads; idle pool threads end 10 s after their last task)."""
    deadline, counts = time.monotonic() + seconds, []
    while len(counts) < quiet_s or len(set(counts[-quiet_s:])) > 1:
        assert time.monotonic() < deadline, f"the thread count never settled: {counts}"
        counts.append(threads_of(pid))
        time.sleep(1)
    return counts[-1]


def test_sixty_people_waiting_on_jobs_hold_no_threads(app, client, tmp_path):
    """Sixty sessions follow their queued jobs (the queue paused, so none ends) while another
    person's interactive call answers; Gradio's pool has 40 threads, so a thread per follower
    would leave the call waiting for ever."""
    proc, url = app
    text = "Every person waits for a job, and nobody holds a thread while waiting. " * 15  # a job
    photo = handle_file(save(skimage.data.astronaut(), tmp_path / "a.png"))
    client.predict(photo, api_name="/detect_faces")   # the threads a warm app keeps
    client.predict(api_name="/pause_queue")
    try:
        idle = settled_threads(proc.pid)
        with ThreadPoolExecutor(8) as pool:
            sessions = list(pool.map(lambda _: Client(url, auth=AUTH, verbose=False, httpx_kwargs=PATIENT),
                                         range(60)))
        waiting = [session.submit(text, 1.0, api_name="/speak") for session in sessions]
        deadline = time.monotonic() + 120
        while sum(j["state"] == "queued" and j["capability"] == "speak_long"
                  for j in client.submit(api_name="/list_jobs").result(timeout=60)["jobs"]) < 60:
            assert time.monotonic() < deadline, "the sixty jobs did not all queue"
            time.sleep(0.5)
        # The sixty submissions ran at once in pool threads, which end after 10 s idle; a
        # follower holding a thread would keep it for as long as it waits.
        during = settled_threads(proc.pid, quiet_s=12)
        _, found = client.submit(photo, api_name="/detect_faces").result(timeout=60)
        assert len(found["faces"]) == 1
        ended = {i: repr(job.exception(timeout=0)) for i, job in enumerate(waiting) if job.done()}
        assert not ended, ended   # which followers ended, and why
        assert during - idle < 15, (idle, during)   # a thread per follower would add 60
    finally:
        client.predict(AUTH[0], api_name="/cancel_user_jobs")
        client.predict(api_name="/resume_queue")
    for job in waiting:   # each follower hears of the cancel and lets go
        with pytest.raises(Exception, match="cancelled"):
            job.result(timeout=60)


def test_system_status_reports_devices_models_and_runs(client, tmp_path):
    client.predict(handle_file(save(skimage.data.astronaut(), tmp_path / "a.png")), api_name="/detect_faces")
    status = client.predict(api_name="/system_status")
    cpu = next(d for d in status["devices"] if d["name"] == "cpu")
    assert cpu["budget"] == 4 * 1024**3
    assert 0 < cpu["free"] <= cpu["total"]
    detector = next(m for m in status["models"] if m["name"] == "face-detector")
    assert detector["role"] == "interactive" and detector["device"] == "cpu"
    assert detector["state"] in ("idle", "in use") and detector["measured"]
    # MTCNN's three nets: ~1.9 MB of float32 tensors, and their copy in its ONNX session with the
    # arena its preparing calls grew (about 30 MiB; more when other work ran during the load).
    assert 1_900_000 < detector["bytes"] < 256 * 2**20
    runs = [r for r in status["runs"] if r["capability"] == "detect_faces"]
    assert runs and runs[0]["models"] == ["face-detector"] and runs[0]["status"] == "ok"
    assert runs[0]["compute_s"] > 0 and runs[0]["peak_rss_bytes"] > 0


def test_the_cost_of_a_request_before_it_runs(client, tmp_path):
    text = "The weather was fine and we walked along the river until the sun went down."
    before = client.predict("detect_language", None, text, api_name="/estimate")
    assert before["known"] is False and before["size"] == f"chars:{len(text)}"
    assert before["text"].startswith("**Before you run:** not measured here yet")
    client.predict(text, api_name="/detect_language")

    after = client.predict("detect_language", None, text * 3, api_name="/estimate")
    assert after["known"] is True and after["verdict"] == "now"
    [model] = after["models"]
    assert model["resident"] and model["load_bytes"] == 0 and model["device"] == "cpu"
    assert after["need_bytes"]["cpu"] == model["run_bytes"] > 0
    assert after["seconds"] is not None and 0 < after["seconds"] < 30
    last = after["last_run"]   # the run just made, predicted against measured
    assert last["endpoint"] == "detect_language" and last["size"] == f"chars:{len(text)}"
    assert last["run_bytes_predicted"] is not None and last["run_bytes_measured"] is not None
    assert "Last run:" in after["text"]

    photo = save(skimage.data.astronaut(), tmp_path / "a.png")
    client.predict(handle_file(photo), api_name="/detect_faces")
    faces = client.predict("detect_faces", handle_file(photo), "", api_name="/estimate")
    assert faces["size"] == "px:262144" and faces["known"]
    assert [m["name"] for m in faces["models"]] == ["face-detector"]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(Exception, match="could not be read as a picture, a sound or a video"):
        client.predict("transcribe", handle_file(str(empty)), "", api_name="/estimate")
    with pytest.raises(Exception, match="There is no endpoint 'detect_fcaes'"):
        client.predict("detect_fcaes", None, "", api_name="/estimate")


def test_empty_input_gets_a_clear_message(client):
    with pytest.raises(Exception, match="Upload an image first"):
        client.predict(None, api_name="/detect_faces")


def test_the_app_requires_its_login(app_url):
    with pytest.raises(Exception):
        Client(app_url, verbose=False)
    request = urllib.request.Request(app_url + "gradio_api/info")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=5)


def test_share_without_auth_generates_a_login(capsys):
    user, password = launch.login(launch.parse_args(["--share"]))
    assert user and len(password) >= 12
    assert password in capsys.readouterr().out
    assert launch.login(launch.parse_args([])) is None
    assert launch.login(launch.parse_args(["--auth", "a:b"])) == ("a", "b")


def test_help_documents_every_flag():
    out = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    for flag in ["--host", "--port", "--share", "--auth", "--budget", "--data-dir", "--device"]:
        assert flag in out


def test_a_tab_that_cannot_run_still_shows_and_says_why(tmp_path):
    from types import SimpleNamespace

    from app import build_app
    from engine import Engine

    def never_built(engine):
        raise AssertionError("an unavailable tab must not build its UI")

    broken = SimpleNamespace(TITLE="Broken", GROUP=None, unavailable=lambda: "weights missing: run ./setup.sh",
                             build=never_built)
    demo = build_app(Engine(tmp_path / "data"), tabs=[broken])
    texts = [c.get("props", {}).get("value") for c in demo.config["components"]]
    labels = [c.get("props", {}).get("label") for c in demo.config["components"]]
    assert "Broken" in labels
    assert any(isinstance(t, str) and "Broken is unavailable here" in t and "run ./setup.sh" in t
               for t in texts)


def test_the_jobs_and_system_handlers_answer_without_a_browser(tmp_path):
    import gradio as gr

    from app import jobs_tab, system_tab
    from engine import Engine, JobKind, UserFacingError
    from app_calls import wired

    engine = Engine(tmp_path / "data", job_options={"job_threads": 1})
    engine.jobs.register(JobKind("nothing", "no-model", lambda ctx: ""))
    job_id = engine.jobs.submit("nothing")   # the workers are not started: it stays queued
    (listed,) = jobs_tab.list_jobs(engine)["jobs"]
    assert listed["id"] == job_id and listed["state"] == "queued" and tuple(listed) == jobs_tab.API_FIELDS
    with pytest.raises(UserFacingError, match="There is no job 'nope'"):
        jobs_tab.cancel_job(engine, "nope")
    with pytest.raises(UserFacingError, match="only failed or cancelled"):
        jobs_tab.retry_job(engine, job_id)
    assert jobs_tab.cancel_job(engine, f" {job_id} ")["state"] == "cancelled"
    assert jobs_tab.retry_job(engine, job_id)["state"] == "queued"
    # Wired as Gradio sees it: the engine bound, the same plain message as a gr.Error.
    with pytest.raises(gr.Error, match="There is no job 'nope'"):
        wired(engine, jobs_tab.cancel_job, "cancel the job")("nope")

    assert "next run will be profiled" in system_tab.profile_next(engine)
    engine.infer("test", *_a_model(engine))
    status = system_tab.system_status(engine)
    assert status["runs"][0]["capability"] == "test" and status["runs"][0]["profile"]
    assert "checks" in system_tab.doctor.__doc__ and system_tab.run_rows(status)["capability"][0] == "test"


def _a_model(engine):
    import torch

    from engine import ModelSpec

    engine.register(ModelSpec(name="tiny", role="micro", runtime="torch", loader=lambda device: torch.nn.Linear(2, 2),
                              source="test", estimate_bytes=1024))
    return "tiny", lambda model: model(torch.ones(1, 2))


def test_a_job_that_fails_from_a_bug_shows_no_exception_text(tmp_path):
    import gradio as gr

    from app import jobs_tab
    from engine import Engine, JobKind, UserFacingError
    from ui.jobs import JobStarted, follow_job

    def crash(ctx):
        raise RuntimeError("/srv/wimmel/secret.py line 3")

    def refuse(ctx):
        raise UserFacingError("This video has no frames.")

    engine = Engine(tmp_path / "data", job_options={"job_threads": 1})
    engine.jobs.register(JobKind("crash", "no-model", crash))
    engine.jobs.register(JobKind("refuse", "no-model", refuse))
    engine.jobs.start()
    try:
        crashed, refused = engine.jobs.submit("crash"), engine.jobs.submit("refuse")
        with pytest.raises(gr.Error) as bug:
            asyncio.run(follow_job(engine, JobStarted(crashed, lambda *a, **k: None)))
        with pytest.raises(gr.Error, match="This video has no frames."):
            asyncio.run(follow_job(engine, JobStarted(refused, lambda *a, **k: None)))
    finally:
        engine.jobs.stop()
    # The log and jobs.sqlite keep the exception for whoever runs the server ...
    assert engine.jobs.get(crashed)["error"] == "RuntimeError: /srv/wimmel/secret.py line 3"
    # ... the person using the app hears that the server is at fault, in every place it shows.
    assert "went wrong on the server" in bug.value.message and "secret" not in bug.value.message
    shown = {j["id"]: j["error"] for j in jobs_tab.list_jobs(engine)["jobs"]}
    assert "RuntimeError" not in shown[crashed] and "went wrong on the server" in shown[crashed]
    assert shown[refused] == "This video has no frames."
    table = jobs_tab.job_rows(engine.jobs.list())
    assert not table["note / error"].str.contains("secret").any()
