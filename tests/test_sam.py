"""Click segmentation on a tiny random-weight SAM built from SamConfig, saved with save_pretrained and
registered through the model store as a local folder: the same path as a hub download. No network."""
import json
import time

import numpy as np
import pytest
from app_calls import endpoints

import tabs.segment
from engine import Engine, UserFacingError
from tabs.catalog import connect_store
from tabs.segment import model as sam


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    folder = tmp_path_factory.mktemp("tiny-sam") / "sam"
    config = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=128, patch_size=16, window_size=4, global_attn_indexes=[1], num_pos_feats=16,
                           mlp_dim=64),
        prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32))
    torch.manual_seed(0)
    SamModel(config).save_pretrained(folder)  # safetensors
    SamProcessor(SamImageProcessor(size={"longest_edge": 128}, pad_size={"height": 128, "width": 128})
                 ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_sam):
    engine = Engine(tmp_path_factory.mktemp("segment") / "data")
    store = connect_store(engine)
    entry = store.add(str(tiny_sam), "auto", name="tiny-sam")
    assert entry["kind"] == "sam" and not entry["owned"]
    return engine


def segment(engine, name, image, points=None, box=None):
    """One segmentation as the tab runs it: a run of the engine, its call."""
    with engine.run("segment") as run:
        return sam.segment(run.call, name, image, points, box, max_pixels=engine.registry.get(name).max_pixels)


def picture(width=150, height=90):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[20:60, 30:90] = (220, 40, 40)  # a red block to click on
    return image


def test_a_stored_sam_is_an_interactive_engine_model(engine, tiny_sam):
    assert sam.sam_models(engine) == ["tiny-sam"]
    spec = engine.registry.get("tiny-sam")
    assert spec.role == "interactive" and spec.runtime == "torch" and sam.is_sam(spec)
    assert spec.loader.path == str(tiny_sam.resolve())
    assert connect_store(engine).list(kind="sam")[0]["name"] == "tiny-sam"
    assert tabs.segment.recognises(tiny_sam) and not tabs.segment.recognises(tiny_sam.parent)
    big = sam.model_spec({"name": "sam-huge", "path": "/x", "bytes": 2_560_000_000, "source": "facebook/sam-vit-huge"})
    assert big.role == "heavy"


def test_a_point_gives_a_mask_of_the_input_size(engine):
    image = picture()
    started = time.perf_counter()
    engine.preload("tiny-sam")
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    result = segment(engine, "tiny-sam", image, [[50, 40, 1]])
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    again = segment(engine, "tiny-sam", image, [[52, 41, 1], [120, 80, 0]])
    next_s = time.perf_counter() - started
    print(f"\ntiny SAM: load {load_s:.3f} s, first point {first_s:.3f} s, next click {next_s:.3f} s")
    for r in (result, again):
        assert r.mask.shape == image.shape[:2] and r.mask.dtype == bool
    assert len(result.scores) == 3 and len(again.scores) == 1  # one point: three candidates, best kept
    info = result.info()
    assert info["width"] == 150 and info["height"] == 90 and info["area"] == int(result.mask.sum())
    assert set(info) >= {"area", "area_fraction", "box", "score"}


def test_a_box_gives_a_mask_of_the_input_size(engine):
    image = picture(201, 77)
    result = segment(engine, "tiny-sam", image, None, [30, 20, 90, 60])
    assert result.mask.shape == (77, 201)
    both = segment(engine, "tiny-sam", image, [[60, 40, 1]], [90, 60, 30, 20])  # any two corners
    assert both.mask.shape == (77, 201)


def test_clicks_on_the_same_picture_reuse_its_embedding(engine):
    image = picture(97, 131)
    calls = []
    with engine.pool.lease("tiny-sam") as model:
        original = model.model.get_image_embeddings

        def counting(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)

        model.model.get_image_embeddings = counting
        try:
            for x in (10, 40, 70):
                assert model.segment(image, [[x, 50]]).mask.shape == (131, 97)
        finally:
            del model.model.get_image_embeddings
    assert len(calls) == 1


def test_a_large_picture_is_shrunk_for_the_model_and_the_mask_scaled_back(engine):
    with engine.pool.lease("tiny-sam") as model:
        result = model.segment(picture(400, 300), [[200, 150]], max_pixels=20_000)
    assert result.mask.shape == (300, 400)


def test_bad_prompts_get_clear_messages(engine):
    image = picture()
    with pytest.raises(sam.SamInputError, match="Click on the picture"):
        tabs.segment.check({"points": []}, {"image": image})
    with pytest.raises(sam.SamInputError, match="outside the 150x90 picture"):
        tabs.segment.check({"points": [[500, 10]]}, {"image": image})
    with pytest.raises(sam.SamInputError, match="Upload a picture"):
        tabs.segment.check({"points": [[5, 10]]}, {"image": None})
    tabs.segment.check({"points": "[[5, 10]]", "box": "[1, 1, 40, 40]"}, {"image": image})
    with pytest.raises(sam.SamInputError, match=r"\[x, y\] or \[x, y, label\]"):
        sam.parse_points([[1, 2, 3, 4]])
    with pytest.raises(sam.SamInputError, match="box is empty"):
        sam.parse_box([5, 5, 5, 40])
    assert sam.parse_points('[[1, 2], {"x": 3, "y": 4, "label": "negative"}]') == [sam.Point(1, 2, 1),
                                                                                sam.Point(3, 4, 0)]


def test_the_mask_can_feed_inpaint():
    from tabs.generate import pipeline as dz

    mask = np.zeros((40, 60), bool)
    mask[10:20, 10:30] = True
    image = sam.mask_image(mask)
    assert image.dtype == np.uint8 and set(np.unique(image)) == {0, 255}
    grown = sam.mask_image(mask, grow_px=3)
    assert grown.sum() > image.sum() and grown[7, 7] == 255 and grown[5, 5] == 0
    # The Generate tab's inpaint reads it as "repaint where white".
    assert np.array_equal(np.asarray(dz.to_mask(image)) > 0, mask)


def test_the_tab_segments_and_says_how_to_add_a_model_when_there_is_none(engine, tmp_path):
    import gradio as gr

    from tabs.segment import tab

    assert tabs.segment.unavailable() is None
    empty = Engine(tmp_path / "empty")
    with gr.Blocks() as demo:
        tab.build(empty)  # builds, with the notice
    apis = endpoints(demo)
    assert "segment" in apis
    with pytest.raises(gr.Error, match="facebook/sam-vit-base"):
        apis["segment"](picture(), "[[10, 10, 1]]")
    with pytest.raises(UserFacingError, match="facebook/sam-vit-base"):
        tab.segment_image(empty, picture(), [[10, 10, 1]])  # the module-level handler, before translation

    with gr.Blocks() as demo:
        tab.build(engine)
    apis = endpoints(demo)
    mask, info = apis["segment"](picture(), json.dumps([[50, 40, 1]]), "", None, 2)
    assert mask.shape == (90, 150) and mask.dtype == np.uint8 and info["model"] == "tiny-sam"
    assert info["points"] == [[50.0, 40.0, 1]] and info["grow_px"] == 2
    with pytest.raises(gr.Error, match="Upload a picture"):
        apis["segment"](None, "[[1, 1]]")
    with pytest.raises(gr.Error, match="no SAM model 'nope'"):
        apis["segment"](picture(), "[[1, 1]]", "", "nope")


def test_clicks_add_points_and_boxes_through_the_module_level_handlers(engine):
    from tabs.segment import tab

    class Click:  # what gr.SelectData carries for a click on an image
        def __init__(self, x, y):
            self.index = [x, y]

    image = picture()
    canvas, mask, info, state, points, box = tab.click(engine, image, None, tab.OBJECT, None, 0, Click(50, 40))
    assert canvas.shape == image.shape and mask.shape == (90, 150) and points == "[[50, 40, 1]]" and box == ""
    _, _, _, state, _, _ = tab.click(engine, image, state, tab.BOX, None, 0, Click(30, 20))  # first corner
    _, mask, info, state, _, box = tab.click(engine, image, state, tab.BOX, None, 0, Click(90, 60))
    assert box == "[30, 20, 90, 60]" and info["prompt_box"] == [30.0, 20.0, 90.0, 60.0]
    _, _, info, state, points, box = tab.undo(engine, image, state, None, 0)
    assert box == "" and points == "[[50, 40, 1]]" and info["prompt_box"] is None


def test_a_stored_sam_may_be_split_and_loads_by_a_device_map(engine, tiny_sam):
    """The spec plans its split from config.json alone (tests/test_device_map.py has the planner and
    the pool on fake GPUs); a DeviceMap goes to from_pretrained(device_map=...). Here every part is
    on the CPU, the one device this machine has: the path a split over GPUs takes, not the split."""
    from engine.device_map import DeviceMap

    spec = engine.registry.get("tiny-sam")
    plan = spec.split({"cuda:0": 10**9, "cuda:1": 10**9})
    assert isinstance(plan, DeviceMap) and plan.devices == ("cuda:0",)   # room enough: one GPU
    assert spec.split({"cuda:0": 1000, "cuda:1": 1000}) is None
    image = picture()
    whole = sam.load(tiny_sam, "cpu")
    mapped = sam.load(tiny_sam, DeviceMap({"vision_encoder": "cpu", "": "cpu"}))
    assert mapped.device == "cpu" and isinstance(mapped.device, DeviceMap)
    total = sum(p.numel() * p.element_size() for p in whole.model.parameters())
    assert mapped.device_shares == {"cpu": whole.device_shares["cpu"]} and whole.device_shares["cpu"] >= total
    assert mapped.placement["tier"] == "split over GPUs" and whole.placement is None
    a, b = whole.segment(image, [[50, 40, 1]]), mapped.segment(image, [[50, 40, 1]])
    assert np.array_equal(a.mask, b.mask) and a.scores == pytest.approx(b.scores, abs=1e-6)
