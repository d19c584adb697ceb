"""OCR on real PP-OCRv4 weights (rapidocr-onnxruntime wheel): images through engine.infer, and
video to SRT subtitles as a real job on the queue, including a resume after a crash."""
import re
from pathlib import Path
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from engine import Engine, JobKind, UserFacingError
from video_helpers import make_test_video
import tabs.ocr
from tabs.ocr import check
from tabs.ocr import model as ocr


# Pillow 12's default font is a scalable TrueType font that ships inside Pillow itself.
FONT = ImageFont.load_default(size=40)
LINES = ["Wimmel reads text", "Open the door at 9:45", "HELLO WORLD 2026"]


def text_image(lines, size=(720, 400), origin=(40, 40), step=110, background=(250, 245, 235)):
    """An RGB image with `lines` written in black; returns it and each line's ink box (x1, y1, x2, y2)."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((origin[0], origin[1] + step * i), line, fill=(0, 0, 0), font=FONT)
    pixels = np.asarray(image)
    boxes = []
    for i in range(len(lines)):   # the dark pixels of each line's band, not the font's metrics
        top = origin[1] + step * i - 10
        ys, xs = np.nonzero(pixels[top:top + step - 20].min(axis=2) < 128)
        boxes.append((xs.min(), top + ys.min(), xs.max() + 1, top + ys.max() + 1))
    return pixels, boxes


@pytest.fixture
def engine(tmp_path):
    engine = Engine(tmp_path / "data", specs=ocr.specs(), job_options={"job_threads": 1})
    for kind in tabs.ocr.job_kinds():
        engine.jobs.register(kind)
    engine.jobs.start()
    yield engine
    engine.jobs.stop()


def infer(engine, image):
    return engine.infer("ocr", ocr.OCR, lambda model: ocr.read_text(model, image))


def test_printed_lines_are_read_exactly_with_boxes_around_them(engine):
    image, ink = text_image(LINES)
    lines = infer(engine, image)
    assert [line["text"] for line in lines[:2]] == LINES[:2]
    # The recogniser may drop the space between two words in capitals; the characters must match.
    assert len(lines) == 3 and lines[2]["text"].replace(" ", "") == LINES[2].replace(" ", "")
    for line, (x1, y1, x2, y2) in zip(lines, ink):
        assert 0.9 <= line["score"] <= 1.0
        box = np.array(line["box"])
        assert box.shape == (4, 2)
        # The box holds the ink (with the detector's small margin) and little else.
        assert box[:, 0].min() <= x1 + 2 and box[:, 0].max() >= x2 - 2
        assert box[:, 1].min() <= y1 + 2 and box[:, 1].max() >= y2 - 2
        assert box[:, 0].min() >= x1 - 15 and box[:, 0].max() <= x2 + 15
        assert box[:, 1].min() >= y1 - 15 and box[:, 1].max() <= y2 + 15
    footprint = engine.footprints.get(ocr.OCR, "cpu")
    assert footprint.load_bytes is not None   # the engine measured the load


def test_boxes_are_in_input_pixels_for_a_large_image(engine):
    # Longer than the pipeline's 2000 px limit for its long side: it shrinks it internally.
    image, _ = text_image(LINES[:1], size=(800, 300), origin=(40, 120))
    small = infer(engine, image)
    big_image = np.asarray(Image.fromarray(image).resize((2080, 780), Image.LANCZOS))
    big = infer(engine, big_image)
    assert [line["text"] for line in big] == [line["text"] for line in small] == LINES[:1]
    assert np.abs(np.array(big[0]["box"]) / 2.6 - np.array(small[0]["box"])).max() < 4


def test_an_image_without_text_gives_no_lines(engine):
    y, x = np.mgrid[0:384, 0:512]
    smooth = np.stack([x / 2, y / 1.5, np.full_like(x, 128)], axis=2).astype(np.uint8)
    assert infer(engine, smooth) == []
    assert infer(engine, np.full((300, 400, 3), 255, np.uint8)) == []


def test_gray_and_rgba_images_are_read_like_rgb(engine):
    # Black on white: the gray and RGBA versions hold exactly the same pixels.
    image, _ = text_image(LINES[:1], size=(420, 300), origin=(30, 120), background=(255, 255, 255))
    gray = np.asarray(Image.fromarray(image).convert("L"))
    rgba = np.asarray(Image.fromarray(image).convert("RGBA"))
    lines = infer(engine, image)
    assert [line["text"].replace(" ", "") for line in lines] == [LINES[0].replace(" ", "")]
    assert infer(engine, gray) == infer(engine, rgba) == lines


def test_draw_lines_marks_each_box_and_keeps_the_size():
    image, _ = text_image(LINES[:1])
    lines = [{"box": [[30, 30], [400, 30], [400, 90], [30, 90]], "text": "x", "score": 0.99}]
    out = ocr.draw_lines(image, lines)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[60, 30]) == (0, 200, 0)   # the box's left edge is drawn green
    assert np.array_equal(out[200:, 500:], image[200:, 500:])   # far from it, nothing changes


def test_srt_times_and_sampling():
    assert ocr.srt_time(0) == "00:00:00,000"
    assert ocr.srt_time(3725.0456) == "01:02:05,046"
    assert ocr.sample_frames(Fraction(10), 40, 2) == [0, 5, 10, 15, 20, 25, 30, 35]
    # NTSC rate: samples fall on the first frame at or after each half second.
    assert ocr.sample_frames(Fraction(30000, 1001), 45, 2) == [0, 15, 30]
    assert ocr.sample_frames(Fraction(5), 4, 10) == [0, 1, 2, 3]   # never more than every frame
    runs = []
    for frame, text in [(0, "A B"), (5, "AB"), (10, ""), (15, "C"), (20, "C")]:
        ocr.add_sample(runs, frame, text, 0.9)
    assert [r[:2] for r in runs] == [[0, "A B"], [10, ""], [15, "C"]]   # a lost space is still A B


def test_srt_cues_end_when_the_text_changes_or_goes(tmp_path):
    runs = [[0, "A", 0.9], [25, "", 0.0], [50, "B\nsecond line", 0.95]]
    path = tmp_path / "out.srt"
    assert ocr.write_srt(runs, 75, Fraction(25), path) == 2
    assert path.read_text() == ("1\n00:00:00,000 --> 00:00:01,000\nA\n\n"
                                "2\n00:00:02,000 --> 00:00:03,000\nB\nsecond line\n\n")


# ---------------------------------------------------------------------------------- video

CAPTIONS = ["First caption A", "Second caption B"]
FPS, SECONDS = 10, 4   # A for 2 s, then B for 2 s
SIDE = 384   # square: the detector scales the short side up to 736 px, so this costs least


def caption_frame(i: int) -> np.ndarray:
    second = i / FPS
    text = CAPTIONS[0] if second < 2 else CAPTIONS[1]
    image = Image.new("RGB", (SIDE, SIDE), (30, 40, 60 + 2 * i))   # a changing background
    ImageDraw.Draw(image).text((24, 170), text, fill=(255, 255, 255), font=FONT)
    return np.asarray(image)


@pytest.fixture
def caption_video(tmp_path):
    return make_test_video(tmp_path / "captions.mp4", frames=FPS * SECONDS, width=SIDE, height=SIDE,
                           fps=FPS, audio=False, draw=caption_frame)


def parse_srt(text: str) -> list[tuple[int, float, float, str]]:
    cues = []
    for block in text.strip().split("\n\n"):
        number, times, *body = block.split("\n")
        m = re.fullmatch(r"(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})", times)
        assert m, times
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, m.groups())
        cues.append((int(number), h1 * 3600 + m1 * 60 + s1 + ms1 / 1000,
                     h2 * 3600 + m2 * 60 + s2 + ms2 / 1000, "\n".join(body)))
    return cues


def run_job(engine, video, **params):
    job_id = engine.jobs.submit(ocr.VIDEO_JOB, {"chunk_frames": 10, **params}, inputs={"video": video})
    return list(engine.jobs.follow(job_id))[-1]


def assert_captions(srt_path):
    text = Path(srt_path).read_text(encoding="utf-8")
    cues = parse_srt(text)
    assert [(n, t) for n, _, _, t in cues] == [(1, CAPTIONS[0]), (2, CAPTIONS[1])]
    (_, a_start, a_end, _), (_, b_start, b_end, _) = cues
    for got, want in ((a_start, 0), (a_end, 2), (b_start, 2), (b_end, 4)):
        assert abs(got - want) <= 0.5
    return text


def test_a_video_becomes_subtitles_with_the_right_texts_and_times(engine, caption_video):
    job = run_job(engine, caption_video)
    assert job["state"] == "done", job["error"]
    assert job["result"].endswith(".srt")
    assert_captions(job["result"])
    # 8 samples in 4 chunks of 10 frames: one lease per chunk, never one per frame.
    assert job["runs"][0]["models"].count(ocr.OCR) == 4


def test_a_killed_video_job_resumes_from_its_checkpoint(tmp_path, caption_video):
    class Crash(Exception):
        pass

    def crash_after_two_chunks(ctx):
        save = ctx.save_checkpoint

        def save_then_crash(**values):
            save(**values)
            if values.get("next_frame") == 20:
                raise Crash("the process died here")
        ctx.save_checkpoint = save_then_crash
        return ocr.video_job(ctx)

    first = Engine(tmp_path / "data", specs=ocr.specs())
    first.jobs.register(JobKind(ocr.VIDEO_JOB, ocr.OCR, crash_after_two_chunks))
    first.jobs.start()
    try:
        crashed = run_job(first, caption_video, samples_per_second=1)   # fewer reads: a quicker test
    finally:
        first.jobs.stop()
    assert crashed["state"] == "failed" and crashed["checkpoint"]["next_frame"] == 20
    # A killed process leaves its job 'running'; a new process on the same data dir resumes it.
    first.jobs.store.update(crashed["id"], state="running")
    second = Engine(tmp_path / "data", specs=ocr.specs())
    for kind in tabs.ocr.job_kinds():
        second.jobs.register(kind)
    second.jobs.start()
    try:
        job = list(second.jobs.follow(crashed["id"]))[-1]
    finally:
        second.jobs.stop()
    assert job["state"] == "done", job["error"]
    assert job["resumed_from_frame"] == 20
    assert job["runs"][-1]["models"].count(ocr.OCR) == 2   # only the chunks left were read
    assert_captions(job["result"])


def test_a_bad_video_or_rate_is_refused_at_submit(engine, tmp_path, caption_video):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(UserFacingError, match="not a video"):   # refused at submit, before the queue
        run_job(engine, text)
    with pytest.raises(UserFacingError, match="Samples per second"):
        run_job(engine, caption_video, samples_per_second=50)


def test_bad_requests_are_refused_clearly(caption_video):
    with pytest.raises(UserFacingError, match="an image first"):
        check({}, {"image": None})
    with pytest.raises(UserFacingError, match="too small to read"):
        check({}, {"image": np.zeros((1, 40, 3), np.uint8)})
    check({}, {"image": np.zeros((2, 2, 3), np.uint8)})
    with pytest.raises(UserFacingError, match="a video first"):
        check({"samples_per_second": 2}, {"video": None})
    with pytest.raises(UserFacingError, match="must be a number"):
        check({"samples_per_second": "often"}, {"video": caption_video})
    for rate in (0.1, 10.5):
        with pytest.raises(UserFacingError, match="between 0.25 and 10"):
            check({"samples_per_second": rate}, {"video": caption_video})
    check({}, {"video": caption_video})   # the default rate


def test_the_tab_handlers_check_then_read(engine):
    import gradio as gr
    from tabs.ocr import tab
    from app_calls import wired

    image, _ = text_image(LINES[:1], size=(420, 300), origin=(30, 120))
    annotated, found = tab.read_text(engine, image)
    assert found == {"lines": infer(engine, image)}
    assert annotated.shape == image.shape
    with pytest.raises(gr.Error, match="Upload an image first"):
        wired(engine, tab.read_text, "read the text")(None)
    with pytest.raises(gr.Error, match="Samples per second"):
        wired(engine, tab.ocr_video, "make the subtitles")("any.mp4", 20)
