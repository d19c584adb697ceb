"""Several logins (--auth-file): scrypt hashes, the auth file's rules, the current user of a handler
call, and the real app with three users: each sees and fetches only their own jobs, only the
admin manages the queue."""
import subprocess
import sys
import time
import urllib.parse
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client, handle_file

from app.job_files import JobFilesGuard
from app_process import ROOT, start_app, stop_app
from ui import shown_files, users
from app_calls import wired
from ui.handlers import handler
from video_helpers import face_video

PASSWORDS = {"alice": "wonderland-1865", "bob": "builder-1998", "root": "admin-pass-2026"}


# ---------------------------------------------------------------------------------- hashes

def test_a_hash_verifies_its_password_only_and_is_salted():
    first, second = users.hash_password("correct horse"), users.hash_password("correct horse")
    assert first != second                      # a fresh salt each time
    assert first.startswith(f"scrypt${users.SCRYPT_N}${users.SCRYPT_R}${users.SCRYPT_P}$")
    assert "correct horse" not in first
    assert users.verify_password("correct horse", first) and users.verify_password("correct horse", second)
    assert not users.verify_password("correct hors", first)
    assert not users.verify_password("", first)
    n, r, p, salt, digest = users.parse_hash(first)
    assert (n, r, p, len(salt), len(digest)) == (2 ** 15, 8, 3, 16, 32)


def test_a_damaged_hash_is_refused_with_a_reason():
    good = users.hash_password("pw")
    with pytest.raises(ValueError, match="scrypt\\$N\\$r\\$p\\$salt\\$hash"):
        users.parse_hash("pbkdf2$1$2$3$x$y")
    with pytest.raises(ValueError, match="power of two"):
        users.parse_hash(good.replace("$32768$", "$30000$", 1))
    with pytest.raises(ValueError, match="damaged"):
        users.parse_hash(good.replace("$8$", "$eight$", 1))


def test_logins_check_names_and_passwords():
    logins = users.Logins.single("ada", "lovelace")
    assert logins.check("ada", "lovelace")
    assert not logins.check("ada", "Lovelace")
    assert not logins.check("eve", "lovelace")   # an unknown name is refused like a wrong password
    assert logins.admins == {"ada"}


# ---------------------------------------------------------------------------------- auth file

def write(tmp_path, text):
    path = tmp_path / "logins.txt"
    path.write_text(text)
    return path


def test_an_auth_file_gives_users_and_admins(tmp_path):
    a, b = users.hash_password("pa"), users.hash_password("pb")
    path = write(tmp_path, f"# our logins\n\nalice:{a}\n  bob : {b}  \nadmins: alice\n")
    logins = users.Logins.from_file(path)
    assert set(logins.hashes) == {"alice", "bob"} and logins.admins == {"alice"}
    assert logins.check("bob", "pb") and not logins.check("bob", "pa")
    assert users.Logins.from_file(path, ("bob",)).admins == {"alice", "bob"}


@pytest.mark.parametrize("text, message", [
    ("alice:hunter2\n", r"line 1: not a scrypt.*plain password\? Write hashes only: python launch.py hash-password"),
    ("# c\nalice {h}\n", r"line 2: expected user:hash"),
    ("alice:{h}\nalice:{h}\n", r"line 2: user 'alice' is listed twice"),
    ("alice:{h}\nadmins: alice, carol\n", r"line 2: admin 'carol' has no login"),
    ("# nobody\n\n", r"lists no logins"),
    ("al ice:{h}\n", r"line 1: user name 'al ice' must be"),
    ("alice:{bad}\n", r"line 1: scrypt parameters N=1000"),
])
def test_auth_file_mistakes_are_named_with_their_line(tmp_path, text, message):
    h = users.hash_password("pw")
    path = write(tmp_path, text.format(h=h, bad=h.replace("$32768$", "$1000$", 1)))
    with pytest.raises(users.AuthFileError, match=message):
        users.Logins.from_file(path)


def test_an_admin_flag_must_name_a_login_and_a_missing_file_is_said(tmp_path):
    path = write(tmp_path, f"alice:{users.hash_password('pw')}\n")
    with pytest.raises(users.AuthFileError, match="--admins: admin 'root' has no login"):
        users.Logins.from_file(path, ("root",))
    with pytest.raises(users.AuthFileError, match="cannot read the auth file"):
        users.Logins.from_file(tmp_path / "missing.txt")


def hash_line(user: str, password: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "hash-password", user, "--stdin"],
                          input=password + "\n", capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_hash_password_prints_a_line_for_the_file(tmp_path):
    line = hash_line("alice", "two words")
    user, _, encoded = line.partition(":")
    assert user == "alice" and users.verify_password("two words", encoded)
    assert "two words" not in line
    refused = subprocess.run([sys.executable, str(ROOT / "launch.py"), "hash-password", "admins", "--stdin"],
                             input="pw\n", capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert refused.returncode == 1 and "names the auth file's admin line" in refused.stderr
    assert refused.stdout == ""


# ---------------------------------------------------------------------------------- current user

def whoami(engine, text: str) -> str:
    """Echo the caller."""
    return f"{text} {users.current_user()} {users.is_admin(users.current_user())}"


def whoami_steps(engine, count: int):
    for _ in range(count):
        yield users.current_user()


@pytest.fixture
def logins():
    configured = users.Logins({"alice": users.hash_password("a"), "root": users.hash_password("r")},
                              frozenset({"root"}))
    users.configure(configured)
    yield configured
    users.configure(None)


def test_each_call_runs_as_the_user_of_its_request(logins):
    bound = wired(None, whoami, "say who")
    # Gradio passes the request after the inputs; a logged-out request counts by its session.
    assert bound("hi", SimpleNamespace(username="alice", session_hash="s1")) == "hi alice False"
    assert bound("hi", SimpleNamespace(username="root", session_hash="s2")) == "hi root True"
    assert bound("hi", SimpleNamespace(username=None, session_hash="s3")) == "hi s3 False"
    assert bound("hi") == "hi None False"          # a direct call (tests): nobody
    assert users.current_user() is None            # and nothing stays set after a call
    steps = handler(None, whoami_steps, "say who")(2, SimpleNamespace(username="bob", session_hash="s4"))
    assert list(steps) == ["bob", "bob"]


def test_without_logins_everyone_is_admin():
    assert users.is_admin(None) and users.is_admin("some-session")


def test_the_guard_maps_paths_to_jobs(tmp_path):
    guard = JobFilesGuard(None, tmp_path / "jobs", owner_of=lambda job_id: "alice")
    root = tmp_path / "jobs"
    assert guard.job_of(f"/gradio_api/file={root}/j1/result.mp4") == "j1"
    assert guard.job_of(f"/gradio_api/file={root}/j1/../j2/x") == "j2"
    assert guard.job_of(f"/gradio_api/file={root}") == ""
    assert guard.job_of(f"/gradio_api/file={root}/../jobs.sqlite") is None
    assert guard.job_of("/gradio_api/info") is None


def test_the_cache_notes_who_was_shown_each_folder(tmp_path):
    cache = tmp_path / "gradio"
    shown = {"path": str(cache / "abc" / "image.webp"), "url": "http://x/gradio_api/file=...",
             "meta": {"_type": "gradio.FileData"}}
    outputs = [[shown, "caption"], {"path": "https://example.org/x.png", "meta": {"_type": "gradio.FileData"}}]
    try:
        assert shown_files.paths_in(outputs) == [shown["path"]]
        assert shown_files.record("alice", outputs, cache) == 1
        assert shown_files.record("bob", {"path": str(tmp_path / "elsewhere.png"),
                                          "meta": {"_type": "gradio.FileData"}}, cache) == 0
        assert shown_files.users_of(cache / "abc" / "other-name.png", cache) == {"alice"}  # by folder
        assert shown_files.users_of(cache / "abc" / ".." / "abc" / "image.webp", cache) == {"alice"}
        assert shown_files.users_of(cache / "abd" / "image.webp", cache) is None   # shown to nobody
        assert shown_files.users_of(cache / "abc", cache) is None                   # the folder itself
        shown_files.record("bob", outputs, cache)                                  # same content, both
        assert shown_files.users_of(shown["path"], cache) == {"alice", "bob"}
    finally:
        shown_files.forget()


# ---------------------------------------------------------------------------------- the real app

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logins")
    lines = [hash_line(user, password) for user, password in PASSWORDS.items()]
    auth = folder / "logins.txt"
    auth.write_text("# test logins\n" + "\n".join(lines) + "\nadmins: root\n")
    proc, url = start_app(folder / "data", "--auth-file", str(auth), "--chunk-frames", "8",
                            "--max-jobs-per-user", "2")
    try:
        yield url.rstrip("/")
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def clients(app):
    return {user: Client(app, auth=(user, password), verbose=False) for user, password in PASSWORDS.items()}


@pytest.fixture(scope="module")
def sessions(app):
    opened = {}
    for user, password in PASSWORDS.items():
        opened[user] = httpx.Client(base_url=app, timeout=30, follow_redirects=True)
        answer = opened[user].post("/login", data={"username": user, "password": password})
        assert answer.status_code == 200, answer.text[:300]
    yield opened
    for client in opened.values():
        client.close()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return face_video(tmp_path_factory.mktemp("video") / "faces.mp4", frames=8)


@pytest.fixture(scope="module")
def alices_job(clients, video):
    clients["alice"].predict(handle_file(str(video)), "blur", api_name="/blur_faces_video")
    (job,) = clients["alice"].predict(api_name="/list_jobs")["jobs"]
    assert job["state"] == "done" and job["owner"] == "alice"
    return job


def test_logins_wrong_passwords_and_strangers(app):
    with httpx.Client(base_url=app, timeout=30) as anonymous:
        assert anonymous.get("/config").status_code == 401
        assert anonymous.post("/login", data={"username": "alice", "password": "builder-1998"}).status_code == 400
        assert anonymous.post("/login", data={"username": "eve", "password": "x"}).status_code == 400
        assert anonymous.post("/login", data={"username": "bob", "password": "builder-1998"}).status_code == 200


def test_the_request_stays_out_of_the_api(clients):
    api = clients["bob"].view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ("/list_jobs", "/cancel_job", "/cancel_user_jobs", "/blur_faces_video"):
        names = [p["parameter_name"] for p in api[name]["parameters"]]
        assert not any("request" in n for n in names), (name, names)
    assert [p["parameter_name"] for p in api["/cancel_user_jobs"]["parameters"]] == ["user"]


def test_each_user_sees_their_own_jobs_and_the_admin_all(clients, alices_job):
    assert clients["bob"].predict(api_name="/list_jobs")["jobs"] == []
    seen = clients["root"].predict(api_name="/list_jobs")["jobs"]
    assert [(j["id"], j["owner"]) for j in seen] == [(alices_job["id"], "alice")]


def test_another_users_job_cannot_be_cancelled_or_retried(clients, alices_job):
    for api_name in ("/cancel_job", "/retry_job"):
        with pytest.raises(Exception, match=f"There is no job '{alices_job['id']}'"):
            clients["bob"].predict(alices_job["id"], api_name=api_name)
    # Alice may: her job is done, so retrying it is refused for its state, not for its owner.
    with pytest.raises(Exception) as refused:
        clients["alice"].predict(alices_job["id"], api_name="/retry_job")
    assert "There is no job" not in str(refused.value)


def test_a_result_file_goes_to_its_owner_and_the_admin_only(app, sessions, alices_job):
    url = "/gradio_api/file=" + urllib.parse.quote(alices_job["result"])
    with open(alices_job["result"], "rb") as f:
        content = f.read()
    assert len(content) > 1000
    for user in ("alice", "root"):
        answer = sessions[user].get(url)
        assert answer.status_code == 200 and answer.content == content, user
    job_dir = f"/{alices_job['id']}/"
    detour = "/gradio_api/file=" + urllib.parse.quote(  # .../<id>/./../<id>/result: the same file
        alices_job["result"].replace(job_dir, f"{job_dir}./../{alices_job['id']}/"))
    assert sessions["alice"].get(detour).content == content
    for path in (url, detour):
        assert sessions["bob"].get(path).status_code == 404, path
    with httpx.Client(base_url=app, timeout=30) as anonymous:
        assert anonymous.get(url).status_code in (401, 404)


def test_a_shown_result_in_gradios_cache_goes_to_its_user_and_the_admin_only(app, sessions, tmp_path):
    """Gradio copies a returned picture into its cache and serves it at /file=<cache path>: that
    URL, passed on, must not show Bob what Alice's call returned."""
    photo = tmp_path / "astronaut.png"
    from skimage import data
    from PIL import Image
    Image.fromarray(data.astronaut()).save(photo)
    alice = Client(app, auth=("alice", PASSWORDS["alice"]), verbose=False, download_files=False)
    shown = alice.predict(handle_file(str(photo)), "pixelate", None, api_name="/blur_faces_image")
    url = shown["url"][shown["url"].index("/gradio_api/file="):]
    picture = sessions["alice"].get(url)
    assert picture.status_code == 200 and len(picture.content) > 10_000
    assert sessions["root"].get(url).content == picture.content
    assert sessions["bob"].get(url).status_code == 404
    with httpx.Client(base_url=app, timeout=30) as anonymous:
        assert anonymous.get(url).status_code in (401, 404)


def test_only_the_admin_manages_the_queue(clients, alices_job, video):
    alice, bob, root = clients["alice"], clients["bob"], clients["root"]
    for api_name, args in (("/pause_queue", ()), ("/resume_queue", ()), ("/cancel_user_jobs", ("alice",))):
        with pytest.raises(Exception, match="Only an admin can"):
            bob.predict(*args, api_name=api_name)
    assert root.predict(api_name="/pause_queue") == {"paused": True}
    try:
        waiting = alice.submit(handle_file(str(video)), "pixelate", api_name="/blur_faces_video")
        queued = wait_for(lambda: [j for j in alice.predict(api_name="/list_jobs")["jobs"] if j["state"] == "queued"])
        assert [j["owner"] for j in queued] == ["alice"]
        assert root.predict("bob", api_name="/cancel_user_jobs") == {"user": "bob", "cancelled": 0}
        assert root.predict("alice", api_name="/cancel_user_jobs") == {"user": "alice", "cancelled": 1}
        with pytest.raises(Exception, match="cancelled"):
            waiting.result(timeout=60)
    finally:
        assert root.predict(api_name="/resume_queue") == {"paused": False}
    states = {j["id"]: j["state"] for j in root.predict(api_name="/list_jobs")["jobs"]}
    assert states == {alices_job["id"]: "done", queued[0]["id"]: "cancelled"}


def wait_for(found, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = found()
        if result:
            return result
        time.sleep(0.1)  # polling the API from outside; no result depends on this delay
    raise TimeoutError("never happened")


# ---------------------------------------------------------------------------------- flags

def test_the_login_flags(tmp_path, capsys):
    import launch

    path = write(tmp_path, f"alice:{users.hash_password('pw')}\nadmins: alice\n")
    from_file = launch.logins(launch.parse_args(["--share", "--auth-file", str(path)]))
    assert set(from_file.hashes) == {"alice"} and from_file.admins == {"alice"}
    assert "Public link login" not in capsys.readouterr().out   # the file's logins, none generated
    single = launch.logins(launch.parse_args(["--auth", "ada:lovelace"]))
    assert single.admins == {"ada"} and single.check("ada", "lovelace")
    assert launch.logins(launch.parse_args([])) is None
    for argv in (["--auth", "a:b", "--auth-file", str(path)], ["--admins", "alice"],
                 ["--auth-file", str(path), "--mcp"]):
        with pytest.raises(SystemExit):
            launch.parse_args(argv)


def test_a_broken_auth_file_stops_the_app_before_it_loads_anything(tmp_path):
    path = write(tmp_path, "alice:hunter2\n")
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--auth-file", str(path),
                           "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1
    assert f"--auth-file: {path} line 1: not a scrypt" in done.stderr
    assert not (tmp_path / "data").exists()


def test_the_jobs_tab_shows_admin_controls_and_owners_to_the_admin_only(app, sessions, alices_job, tmp_path):
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is not installed: ./setup.sh installs it (apt-get install chromium)"
    screenshots = tmp_path
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for user, admin in (("root", True), ("bob", False)):
                context = browser.new_context(viewport={"width": 1440, "height": 1000})
                # The session's login cookie (the one without Secure: the app is on plain http).
                context.add_cookies([{"name": c.name, "value": c.value, "url": app}
                                     for c in sessions[user].cookies.jar if "unsecure" in c.name])
                page = context.new_page()
                page.goto(app)
                page.locator('[role="tablist"]').first.get_by_role("tab", name="Jobs", exact=True).click()
                table = page.locator('[role="tabpanel"]:visible').first
                table.get_by_text("Long jobs run here").wait_for(timeout=60_000)
                pause = page.get_by_role("button", name="Pause queue")
                if admin:
                    pause.wait_for(timeout=30_000)
                    # The table's cells are in the page once the timer's first tick filled it.
                    page.wait_for_function("id => document.body.innerText.includes(id) || "
                                           "document.body.innerHTML.includes(id)", arg=alices_job["id"],
                                           timeout=30_000)
                    page.screenshot(path=str(screenshots / f"jobs-{user}.png"), full_page=True)
                    assert "owner" in page.locator('[role="tabpanel"]:visible').first.inner_html()
                else:
                    page.wait_for_timeout(3000)   # two ticks of the table's timer: nothing of Alice's shows up
                    page.screenshot(path=str(screenshots / f"jobs-{user}.png"), full_page=True)
                    assert pause.count() == 0 or not pause.is_visible()
                    assert alices_job["id"] not in page.content()
                context.close()
        finally:
            browser.close()


def test_a_user_past_the_job_limit_is_told_and_loses_nothing(clients, video):
    """--max-jobs-per-user 2: with the queue paused bob's third job is refused in plain words,
    his two queued ones stay, and alice is not held to bob's count."""
    bob, root = clients["bob"], clients["root"]
    root.predict(api_name="/pause_queue")
    try:
        held = [bob.submit(handle_file(str(video)), "blur", api_name="/blur_faces_video") for _ in range(2)]
        wait_for(lambda: len([j for j in bob.predict(api_name="/list_jobs")["jobs"] if j["state"] == "queued"]) == 2)
        with pytest.raises(Exception, match="You already have 2 jobs queued; the limit is 2"):
            bob.predict(handle_file(str(video)), "blur", api_name="/blur_faces_video")
        assert [j["state"] for j in bob.predict(api_name="/list_jobs")["jobs"]] == ["queued", "queued"]
    finally:
        assert root.predict("bob", api_name="/cancel_user_jobs")["cancelled"] == 2
        root.predict(api_name="/resume_queue")
    for job in held:
        with pytest.raises(Exception, match="cancelled"):
            job.result(timeout=60)
