"""What a public link exposes: only the login until logged in, then only the app's own files,
and uploads no larger than the cap."""
import urllib.parse

import httpx
import pytest

from app_process import start_app, stop_app

AUTH = ("ada", "lovelace-1815")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    (data / "secret.txt").write_text("the data dir's own files are not for download")
    proc, url = start_app(data, "--auth", ":".join(AUTH), "--max-file-size", "1MB")
    try:
        yield url.rstrip("/"), data
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def session(app):
    url, _ = app
    client = httpx.Client(base_url=url, timeout=30, follow_redirects=True)
    answer = client.post("/login", data={"username": AUTH[0], "password": AUTH[1]})
    assert answer.status_code == 200, answer.text[:300]
    yield client
    client.close()


def test_nothing_but_the_login_answers_without_the_password(app):
    url, _ = app
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        assert anonymous.get("/config").status_code == 401
        assert anonymous.get("/gradio_api/info").status_code == 401
        wrong = anonymous.post("/login", data={"username": AUTH[0], "password": "guess"})
        assert wrong.status_code == 400


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../../../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/proc/self/environ", "launch.py", "README.md",
])
def test_crafted_file_paths_are_refused(session, path):
    for route in ("/gradio_api/file=", "/file="):
        answer = session.get(route + path)
        assert answer.status_code in (403, 404), (route + path, answer.status_code, answer.text[:200])
        assert "root:" not in answer.text


def test_the_data_dir_outside_job_results_is_not_served(session, app):
    _, data = app
    for path in (data / "secret.txt", data / "footprints.json", data / "jobs.sqlite"):
        answer = session.get("/gradio_api/file=" + urllib.parse.quote(str(path)))
        assert answer.status_code in (403, 404), (path, answer.status_code)


def test_uploads_over_the_cap_are_refused_and_small_ones_pass(session):
    small = session.post("/gradio_api/upload", files={"files": ("small.png", b"\x89PNG" + b"0" * 1000)})
    assert small.status_code == 200, small.text[:200]
    big = session.post("/gradio_api/upload", files={"files": ("big.png", b"\x89PNG" + b"0" * 2_000_000)})
    assert big.status_code == 413, (big.status_code, big.text[:200])
    assert "exceeded maximum allowed size of 1048576 bytes" in big.text
