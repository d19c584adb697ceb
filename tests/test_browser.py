"""The app in a real browser (headless Chromium driven by Playwright), as a person uses it.

Screenshots of every tab go to $WIMMEL_SCREENSHOTS when set (docs/screenshots for the README),
else to the test's temporary folder.
"""
import os
import re
import shutil
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from playwright.sync_api import sync_playwright

from app_process import start_app, stop_app
from video_helpers import face_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    proc, url = start_app(tmp_path_factory.mktemp("browser-data"))
    try:
        yield url
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "Chromium is not installed: ./setup.sh installs it (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(app_url)
    page.get_by_role("tab", name="Faces", exact=True).wait_for(timeout=60_000)
    yield page
    page.close()


def top_tabs(page):
    tabs = page.locator('[role="tablist"]').first.locator('[role="tab"]')
    return [tabs.nth(i).inner_text().strip() for i in range(tabs.count())]


def open_tab(page, name):
    page.locator('[role="tablist"]').first.get_by_role("tab", name=name, exact=True).click()
    panel = page.locator('[role="tabpanel"]:visible').first
    panel.wait_for()
    return panel


def open_section(page, group, name):
    """A capability's panel inside its group's tab (People / Faces)."""
    outer = open_tab(page, group)
    outer.get_by_role("tab", name=name, exact=True).first.click()
    panel = outer.locator('[role="tabpanel"]:visible').first
    panel.wait_for()
    return panel


def shots_dir(tmp_path) -> Path:
    folder = Path(os.environ.get("WIMMEL_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def visible_errors(page):
    return [t for t in page.locator(".toast-body, .error").all_inner_texts() if t.strip()]


def test_every_tab_opens_without_errors_and_is_photographed(page, tmp_path):
    names = top_tabs(page)
    # Eight tabs: the bar fits the window, none hidden behind an overflow menu.
    assert names == ["People", "Images", "Text", "Audio", "Generate", "Models", "Jobs", "System"]
    folder = shots_dir(tmp_path)
    for name in names:
        panel = open_tab(page, name)
        page.wait_for_timeout(800)   # let plots and tables render before the picture
        text = panel.inner_text()
        assert "is unavailable here" not in text, f"{name}: {text[:300]}"
        assert not visible_errors(page), f"{name}: {visible_errors(page)}"
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        page.screenshot(path=str(folder / f"{slug}.png"), full_page=True)
        assert (folder / f"{slug}.png").stat().st_size > 10_000
    audio = open_tab(page, "Audio")
    sections = [t for t in audio.locator('[role="tablist"]').first.locator('[role="tab"]').all_inner_texts() if t.strip()]
    assert {"Speech to text", "Text to speech", "Voice activity", "Pitch", "Keywords"} <= set(sections)
    # The sections of the grouped tabs, each opened and photographed too.
    for group in ("People", "Images", "Text", "Audio"):
        panel = open_tab(page, group)
        bar = panel.locator('[role="tablist"]').first   # the group's own sub-tabs, not those inside them
        names = [t.strip() for t in bar.locator('[role="tab"]').all_inner_texts() if t.strip()]
        assert len(names) >= 2, f"{group}: {names}"
        for name in names:
            bar.get_by_role("tab", name=name, exact=True).click()
            page.wait_for_timeout(500)
            assert "is unavailable here" not in panel.inner_text(), f"{group} / {name}"
            assert not visible_errors(page), f"{group} / {name}: {visible_errors(page)}"
            slug = re.sub(r"[^a-z0-9]+", "-", f"{group} {name}".lower()).strip("-")
            page.screenshot(path=str(folder / f"{slug}.png"), full_page=True)


def test_a_photo_uploaded_in_the_faces_tab_gets_its_face_boxed(page, tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    panel = open_section(page, "People", "Faces")
    panel.locator('input[type="file"]').first.set_input_files(str(photo))
    # Before the first run of detect_faces here its cost is not known, and the line says so.
    panel.get_by_text("not measured here yet").first.wait_for(timeout=60_000)
    panel.get_by_role("button", name="Detect faces").click()
    found = panel.get_by_text('"box"').first
    found.wait_for(timeout=120_000)
    text = panel.inner_text()
    assert "score" in text and "landmarks" in text
    # After it, the line under the button tells this photo's cost and the last run's measure.
    panel.get_by_text("Last run:").first.wait_for(timeout=60_000)
    line = panel.locator(".cost-line", has_text="Last run:").first.inner_text()
    assert "0.26 MP picture needs about" in line and "face-detector is loaded" in line, line
    page.screenshot(path=str(shots_dir(tmp_path) / "faces-detected.png"), full_page=True)


def test_a_video_job_started_in_faces_shows_in_the_jobs_tab(page, tmp_path):
    video = face_video(tmp_path / "faces.mp4", frames=12)
    panel = open_section(page, "People", "Faces")
    panel.get_by_role("tab", name="Hide in a video").click()
    video_panel = page.locator('[role="tabpanel"]:visible').last
    video_panel.locator('input[type="file"]').first.set_input_files(str(video))
    page.get_by_role("button", name="Hide faces in the video").click()
    jobs = open_tab(page, "Jobs")
    jobs.get_by_text("blur_faces_video").filter(visible=True).first.wait_for(timeout=120_000)
    assert not visible_errors(page)
    page.screenshot(path=str(shots_dir(tmp_path) / "jobs-with-a-video-job.png"), full_page=True)


def test_a_file_that_is_not_a_video_is_refused_with_a_plain_message_and_queues_nothing(page, app_url, tmp_path):
    from gradio_client import Client

    def job_ids():   # from the server, not the table: the table fills in on a 2 s timer
        return {j["id"] for j in Client(app_url, verbose=False).predict(api_name="/list_jobs")["jobs"]}

    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is not a video\n" * 100)
    jobs_before = job_ids()
    panel = open_section(page, "People", "Faces")
    panel.get_by_role("tab", name="Hide in a video").click()
    video_panel = page.locator('[role="tabpanel"]:visible').last
    video_panel.locator('input[type="file"]').first.set_input_files(str(fake))
    page.get_by_role("button", name="Hide faces in the video").click()
    # The browser's own player says "Video not playable" at upload; the server's verdict follows.
    toast = page.locator(".toast-body").filter(has_text="not a video").first
    toast.wait_for(timeout=60_000)
    message = toast.inner_text()
    assert "not a video" in message and "Traceback" not in message and str(tmp_path) not in message
    page.screenshot(path=str(shots_dir(tmp_path) / "faces-not-a-video.png"), full_page=True)
    assert job_ids() == jobs_before
