"""Background removal through a real engine, real weights (the mediapipe wheel's selfie
segmenter, rebuilt in torch and run on ONNX Runtime) and real ffmpeg. The masks are held to
LiteRT's, stored in tests/data/selfie_litert_reference.npz (tests/test_selfie_torch.py says how)."""
import gradio as gr
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFilter, ImageOps

import engine.media.video_job as video_job_module
import tabs.background as capability
from capability_engine import capability_engine
from engine import UserFacingError
from engine.media.video import probe
from engine.runtimes import onnx_runtime
from tests.data.make_selfie_reference import read_reference
from tests.video_helpers import (FACE_SIZE, decode_all, face_video, make_test_video, sharpness,
                                 smooth_background)
from tabs.background import model as bg
from app_calls import wired

ASTRONAUT = skimage.data.astronaut()  # 512x512, a woman in an orange suit, a flag, a shuttle model
COFFEE = skimage.data.coffee()
# Regions of the astronaut photo, picked by looking at it: (rows, columns).
FACE = (slice(90, 170), slice(190, 260))
SUIT = (slice(300, 450), slice(60, 230))
BACKGROUND = {"wall above the shoulder": (slice(0, 150), slice(330, 390)),
              "shuttle model": (slice(20, 250), slice(400, 470)),
              "wall left of the head": (slice(0, 120), slice(40, 150))}


def mean_abs(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("background"),
                           capability.specs(), capability.job_kinds()) as engine:
        yield engine


def segment(engine, image):
    """The person mask as the Photo tab makes it: one run, the segmenter leased through it."""
    with engine.run("remove_background") as run:
        return bg.segment(run.call, image)


@pytest.fixture(scope="module")
def astronaut_mask(engine):
    return segment(engine, ASTRONAUT)


def test_the_weights_are_here_and_the_net_runs_on_onnx_runtime():
    assert bg.unavailable_reason() is None
    (spec,) = capability.specs()
    assert (spec.name, spec.runtime, spec.device) == (bg.SEGMENTER, "onnxruntime", onnx_runtime.spec_device())
    assert "LiteRT" not in spec.description + spec.source
    segmenter = bg.load("cpu")
    assert segmenter.runtime == "onnxruntime" and (segmenter.height, segmenter.width) == (256, 256)
    out = segmenter(bg.model_input(ASTRONAUT))
    # The net ends in a logistic: its output already is a probability, no sigmoid to add.
    assert out.shape == (256, 256) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.min() < 0.01 and out.max() > 0.99
    result, mask = bg.remove_background(segmenter, ASTRONAUT, "color")
    assert result.shape == (512, 512, 3) and mask.shape == (512, 512) and mask.dtype == np.uint8


def test_the_engine_path_gives_the_same_mask_as_the_model_alone_and_as_litert(astronaut_mask):
    segmenter = bg.load("cpu")
    assert np.array_equal(bg.person_mask(segmenter, ASTRONAUT), astronaut_mask)
    # LiteRT's P(person) (stored), made into a mask the same way: one level apart at most.
    litert = bg.upsample_mask(read_reference()["probabilities"]["astronaut"], 512, 512)
    assert np.abs(astronaut_mask.astype(int) - litert.astype(int)).max() <= 1


def test_the_mask_covers_the_person_and_not_the_background(astronaut_mask):
    mask = astronaut_mask / 255.0
    assert astronaut_mask.shape == ASTRONAUT.shape[:2] and astronaut_mask.dtype == np.uint8
    assert mask[FACE].mean() > 0.95
    assert mask[SUIT].mean() > 0.98 and mask[SUIT].min() > 0.9
    for name, region in BACKGROUND.items():
        assert mask[region].mean() < 0.02, name
    assert mask[BACKGROUND["wall above the shoulder"]].max() < 0.02
    assert mask[BACKGROUND["shuttle model"]].max() < 0.02


@pytest.mark.parametrize("name", ["gradient", "white", "gray", "black"])
def test_a_picture_with_no_person_gives_a_near_empty_mask(engine, name):
    picture = smooth_background() if name == "gradient" else np.full(
        (300, 400, 3), {"white": 255, "gray": 128, "black": 0}[name], np.uint8)
    mask = segment(engine, picture) / 255.0
    assert mask.mean() < 0.01 and mask.max() < 0.05


def test_the_mask_edge_is_soft_and_thin(engine):
    # At 4x the model's resolution the bilinear scale-up leaves a ramp of a few pixels, no steps.
    big = np.asarray(Image.fromarray(ASTRONAUT).resize((1024, 1024), Image.LANCZOS))
    mask = segment(engine, big)
    assert ((mask > 12) & (mask < 243)).mean() > 0.01
    # Across the edge of her hair (row 200 of 1024, out to the wall on the right) the mask falls
    # from 255 to 0 through a few in-between values: not one jump, not a wide smear.
    row = mask[200, 500:760].astype(int)
    assert row.min() == 0 and row.max() == 255
    assert 3 <= ((row > 12) & (row < 243)).sum() <= 24
    # The mask is the same at any size, up to the resize: 1024 px shrunk matches 512 px.
    small = np.asarray(Image.fromarray(mask).resize((512, 512), Image.BILINEAR))
    assert mean_abs(small, segment(engine, ASTRONAUT)) < 2


def test_every_mode_changes_only_the_background(engine, astronaut_mask):
    person, behind = astronaut_mask == 255, astronaut_mask == 0
    assert person.mean() > 0.3 and behind.mean() > 0.2

    transparent = bg.composite(ASTRONAUT, astronaut_mask, "transparent")
    assert transparent.shape == (512, 512, 4) and transparent.dtype == np.uint8
    assert np.array_equal(transparent[..., :3], ASTRONAUT)
    assert np.array_equal(transparent[..., 3], astronaut_mask)

    green = bg.composite(ASTRONAUT, astronaut_mask, "color", color="#00b140")
    assert green.shape == (512, 512, 3)
    assert np.array_equal(green[person], ASTRONAUT[person])
    assert (green[behind] == (0, 177, 64)).all()
    white = bg.composite(ASTRONAUT, astronaut_mask, "color")  # white by default
    assert (white[behind] == 255).all() and np.array_equal(white[person], ASTRONAUT[person])

    blurred = bg.composite(ASTRONAUT, astronaut_mask, "blur")
    assert blurred.shape == (512, 512, 3)
    assert np.array_equal(blurred[person], ASTRONAUT[person])
    shuttle = BACKGROUND["shuttle model"]
    assert sharpness(blurred[shuttle]) < 0.2 * sharpness(ASTRONAUT[shuttle])
    assert mean_abs(blurred[shuttle], ASTRONAUT[shuttle]) > 5
    # The person's colours are kept out of the blur. Near her (background 5 to 24 px from the
    # mask) a plain blur of the whole photo tints the wall with her orange suit (red minus blue
    # goes up by ~6); ours moves it by under half of that.
    def grown(size):
        return np.asarray(Image.fromarray(np.where(astronaut_mask >= 128, 255, 0).astype(np.uint8))
                          .filter(ImageFilter.MaxFilter(size))) > 0

    near = behind & grown(49) & ~grown(9)
    assert near.sum() > 5000
    plain = bg.composite(ASTRONAUT, astronaut_mask, "image",
                         background=np.asarray(Image.fromarray(ASTRONAUT).filter(ImageFilter.GaussianBlur(12.8))))

    def orange(picture):
        return float((picture[..., 0].astype(int) - picture[..., 2])[near].mean())

    tint, plain_tint = orange(blurred) - orange(ASTRONAUT), orange(plain) - orange(ASTRONAUT)
    assert plain_tint > 4 and abs(tint) < 0.5 * plain_tint

    cup = bg.composite(ASTRONAUT, astronaut_mask, "image", background=COFFEE)
    fitted = np.asarray(ImageOps.fit(Image.fromarray(COFFEE), (512, 512), Image.LANCZOS))
    assert cup.shape == (512, 512, 3)
    assert np.array_equal(cup[person], ASTRONAUT[person])
    assert np.array_equal(cup[behind], fitted[behind])


def test_sizes_channels_and_alpha_are_kept(engine):
    wide = np.asarray(Image.fromarray(ASTRONAUT).resize((301, 199), Image.LANCZOS))
    mask = segment(engine, wide)
    assert mask.shape == (199, 301)
    for mode in ("blur", "color"):
        assert bg.composite(wide, mask, mode).shape == (199, 301, 3)
    # A tall background covers a wide photo: scaled to cover and cropped, never stretched.
    assert bg.composite(wide, mask, "image", background=COFFEE[:, :200]).shape == (199, 301, 3)
    # A gray photo comes back RGB; an RGBA photo keeps its own transparency under the mask's.
    gray = np.asarray(Image.fromarray(ASTRONAUT).convert("L"))
    assert bg.composite(gray, segment(engine, gray), "color").shape == (512, 512, 3)
    rgba = np.dstack([ASTRONAUT, np.full((512, 512), 255, np.uint8)])
    rgba[:200, :, 3] = 0  # the top was already transparent
    out = bg.composite(rgba, segment(engine, rgba), "transparent")
    assert out.shape == (512, 512, 4)
    assert (out[:200, :, 3] == 0).all() and out[SUIT][..., 3].mean() > 240


def test_each_call_is_an_engine_run(engine):
    before = len(engine.runs.latest(500))
    segment(engine, ASTRONAUT)
    segment(engine, COFFEE)
    runs = engine.runs.latest(500)
    assert len(runs) == before + 2
    for run in runs[:2]:
        assert run.capability == "remove_background" and run.status == "ok"
        assert run.models == [bg.SEGMENTER] and run.device == "cpu"
        assert run.backends[bg.SEGMENTER].lower() == "onnxruntime:cpu"  # 'onnxruntime:CPU' where the session shows
        assert run.peak_rss_bytes > 0
    status = {m["name"]: m for m in engine.status()["models"]}
    assert status[bg.SEGMENTER]["state"] == "idle" and status[bg.SEGMENTER]["bytes"] > 0


def test_bad_inputs_give_clear_errors(engine):
    with pytest.raises(bg.BackgroundInputError, match="Choose a mode"):
        bg.check_mode(None)
    with pytest.raises(bg.BackgroundInputError, match="Unknown mode 'sepia'.*transparent, blur, color, image"):
        bg.check_mode("sepia")
    with pytest.raises(bg.BackgroundInputError, match="needs a background image"):
        bg.check_mode("image", has_background=False)
    with pytest.raises(bg.BackgroundInputError, match="MP4.*has none"):
        bg.check_mode("transparent", video=True)
    assert bg.check_mode(" Blur ") == "blur"
    for image, message in ((None, "Upload an image"), (np.zeros((0, 0, 3), np.uint8), "empty"),
                           (ASTRONAUT[:10, :10], "too small")):
        with pytest.raises(bg.BackgroundInputError, match=message):
            capability.check({"mode": "blur"}, {"image": image})
    with pytest.raises(bg.BackgroundInputError, match="not a colour"):
        bg.parse_color("no colour")
    assert bg.parse_color("rgba(0.5, 255, 10.2, 1)") == (0, 255, 10)
    assert bg.parse_color("#0f0") == (0, 255, 0) and bg.parse_color(None) == (255, 255, 255)


def tab_function(engine, api_name):
    """The tab's module-level handler behind `api_name`, bound to the engine as build() wires it
    (no browser, no Blocks)."""
    from tabs.background import tab

    return wired(engine, getattr(tab, api_name), api_name.replace("_", " "))


def test_the_tab_turns_bad_input_into_short_messages_and_answers_good_input(engine):
    remove = tab_function(engine, "remove_background")
    cases = [((None, "blur"), "Upload an image first."),
             ((np.zeros((0, 5, 3), np.uint8), "blur"), "The image is empty."),
             ((ASTRONAUT, "sepia"), "Unknown mode"),
             ((ASTRONAUT, None), "Choose a mode first."),
             ((ASTRONAUT, "image", "#ffffff", None), "Mode 'image' needs a background image."),
             ((ASTRONAUT, "color", "not a colour"), "is not a colour")]
    for args, message in cases:
        with pytest.raises(gr.Error, match=message):
            remove(*args)
    result, mask = remove(ASTRONAUT, "transparent")
    assert result.shape == (512, 512, 4) and np.array_equal(result[..., 3], mask)
    result, _ = remove(ASTRONAUT, "image", "#ffffff", COFFEE)
    assert result.shape == (512, 512, 3)
    video = tab_function(engine, "remove_background_video")
    with pytest.raises(gr.Error, match="Upload a video first."):
        video(None, "blur")
    with pytest.raises(gr.Error, match="transparent background needs a video format with an alpha"):
        video("clip.mp4", "transparent")


# ---------------------------------------------------------------------------------- video

FRAMES = 16


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    picture = folder / "coffee.png"
    Image.fromarray(COFFEE).save(picture)
    return {"faces": face_video(folder / "faces.mp4", frames=FRAMES), "coffee": picture}


def run_job(engine, video, mode, color=None, background=None, chunk_frames=8):
    params = {"mode": mode, "chunk_frames": chunk_frames}
    if color is not None:
        params["color"] = color
    inputs = {"video": video}
    if background is not None:
        inputs["background"] = background
    job_id = engine.jobs.submit("remove_background_video", params, inputs=inputs)
    return list(engine.jobs.follow(job_id))[-1]


def person_and_background(i: int):
    """In face_frame(i): the astronaut's face, and a stretch of background far from her."""
    travel = 480 - FACE_SIZE - 40
    step = (4 * i) % (2 * travel)
    left = 20 + (step if step <= travel else 2 * travel - step)
    scale = FACE_SIZE / 512
    face = (slice(60 + round(95 * scale), 60 + round(165 * scale)),
            slice(left + round(195 * scale), left + round(255 * scale)))
    below = (slice(300, 360), slice(0, 480))  # under her box (rows 60-260) with a margin
    return face, below


def test_video_job_replaces_the_background_and_keeps_frames_fps_audio(engine, videos):
    source = decode_all(videos["faces"])
    before = probe(videos["faces"])
    fitted = np.asarray(ImageOps.fit(Image.fromarray(COFFEE), (480, 360), Image.LANCZOS))
    for mode, color, background in (("color", "#00b140", None), ("image", None, videos["coffee"]),
                                    ("blur", None, None)):
        job = run_job(engine, videos["faces"], mode, color, background)
        assert job["state"] == "done", job["error"]
        after = probe(job["result"])
        assert (after.width, after.height, after.frames) == (480, 360, FRAMES)
        assert after.fps == before.fps and after.has_audio
        # One run for the job; the segmenter is leased once per chunk of 8 frames.
        assert job["runs"][0]["models"] == [bg.SEGMENTER] * 2
        frames = decode_all(job["result"])
        for i in (0, 7, 8, 15):
            face, below = person_and_background(i)
            assert mean_abs(frames[i][face], source[i][face]) < 4, (mode, i)
            if mode == "color":
                assert np.abs(frames[i][below].astype(int) - (0, 177, 64)).mean() < 4
            elif mode == "image":
                assert mean_abs(frames[i][below], fitted[below]) < 4
            else:  # the gradient was smooth to begin with: blurred, it stays close
                assert mean_abs(frames[i][below], source[i][below]) < 6


def test_a_resumed_video_job_gives_exactly_the_frames_of_an_uninterrupted_one(engine, videos, monkeypatch):
    whole = run_job(engine, videos["faces"], "color", "#203040")
    assert whole["state"] == "done", whole["error"]
    # Kill the job's first attempt while it writes its second chunk, then retry it.
    real_write, calls = video_job_module.write_segment, []

    def crash_on_second_chunk(frames, path, fps):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_write(frames, path, fps)

    monkeypatch.setattr(video_job_module, "write_segment", crash_on_second_chunk)
    broken = run_job(engine, videos["faces"], "color", "#203040")
    assert broken["state"] == "failed" and "simulated crash" in broken["error"]
    assert broken["checkpoint"]["chunks_done"] == 1
    engine.jobs.retry(broken["id"])
    resumed = list(engine.jobs.follow(broken["id"]))[-1]
    assert resumed["state"] == "done", resumed["error"]
    assert resumed["resumed_from_frame"] == 8
    assert np.array_equal(decode_all(resumed["result"]), decode_all(whole["result"]))


def test_video_jobs_with_bad_input_are_refused_clearly_at_submit(engine, videos, tmp_path):
    not_a_picture = tmp_path / "background.png"
    not_a_picture.write_text("not a picture")
    for mode, color, picture, message in (("transparent", None, None, "MP4"),
                                          ("image", None, None, "needs a background image"),
                                          ("image", None, not_a_picture, "background image could not be read"),
                                          ("color", "mauve-ish", None, "not a colour")):
        with pytest.raises(UserFacingError, match=message) as refused:
            run_job(engine, videos["faces"], mode, color, picture)
        assert "Traceback" not in str(refused.value)


def test_a_video_with_no_person_is_all_background(engine, tmp_path):
    # No one in front of the camera: nothing is the person, every pixel becomes the colour.
    clip = make_test_video(tmp_path / "empty.mp4", frames=8, width=320, height=240, fps=24,
                           draw=lambda i: smooth_background(320, 240))
    job = run_job(engine, clip, "color", "#ff0000")
    assert job["state"] == "done", job["error"]
    frames = decode_all(job["result"])
    assert np.abs(frames.astype(int) - (255, 0, 0)).mean() < 4
