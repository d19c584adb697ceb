"""txt2img / img2img / inpaint on a tiny random Stable Diffusion pipeline built from configs and
saved with save_pretrained (and as one original-layout .safetensors file), loaded through the same
path as a real download. No network."""
import json
import zipfile

import numpy as np
import pytest
from app_calls import endpoints, named
from PIL import Image

from engine import Engine, UserFacingError
from tiny_diffusion import config_only_copy, save_single_file, save_tiny_pipeline
from tabs.generate.batch import batch_capability, batch_images
from tabs.generate.checkpoint import DiffusionModel, DiffusionSetupError, defaults, pipeline_size, single_file_type
from tabs.generate.images import feather_px, to_mask
from tabs.generate.pipeline import generate as generate_images, load_pipeline
from tabs.generate.png_info import format_parameters, parse_parameters, read_parameters, save_png
from tabs.generate.registry import diffusion_models, is_diffusion, register
from tabs.generate.request import DiffusionInputError, Request, check_request

NAME = "tiny-sd"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    folder = save_tiny_pipeline(root / "sd")
    return {"folder": folder, "single": save_single_file(folder, root / "tiny-sd.safetensors"),
            "config": config_only_copy(folder, root / "sd-config")}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, files):
    engine = Engine(tmp_path_factory.mktemp("generate") / "data", job_options={"job_threads": 1})
    register(engine, DiffusionModel(NAME, str(files["folder"])))
    engine.jobs.start()
    yield engine
    engine.jobs.stop()


def request(**changes):
    values = dict(prompt="a photo of a cat", negative_prompt="blurry", steps=2, guidance=7.0, width=64,
                  height=64, seed=7)
    values.update(changes)
    return Request(**values)


def generate(engine, mode="txt2img", name=NAME, image=None, mask=None, progress=None, **changes):
    with engine.run(mode) as run:
        return generate_images(run.call, name, mode, request(**changes), image, mask, progress=progress)


def pixels(image):
    return np.asarray(image, np.int16)


@pytest.fixture(scope="module")
def seven(engine):
    """txt2img with seed 7, the reference of several tests."""
    return generate(engine)[0]


def test_the_model_is_a_heavy_torch_model_sized_from_its_files(engine, files):
    spec = engine.registry.get(NAME)
    assert spec.role == "heavy" and spec.runtime == "torch" and is_diffusion(spec)
    assert diffusion_models(engine) == [NAME]
    size = pipeline_size(DiffusionModel(NAME, str(files["folder"])), 4)
    assert spec.estimate_bytes == size.total and 7_000_000 < size.total < 10_000_000  # float32 tiny
    assert set(size.components) == {"unet", "vae", "text_encoder"}
    # The headers' sizes are the loaded modules' (position_ids, a buffer, is not saved).
    loaded = load_pipeline(DiffusionModel(NAME, str(files["folder"])))
    from tabs.generate.tiers import PipelineSize

    assert abs(PipelineSize.of_pipeline(loaded).total - size.total) < 1024
    assert defaults(DiffusionModel(NAME, str(files["folder"])))["width"] == 64  # native size


def test_the_same_seed_gives_the_same_pixels_and_another_seed_differs(engine, seven):
    assert seven.size == (64, 64)
    again = generate(engine)[0]
    assert np.array_equal(pixels(again), pixels(seven))
    other = generate(engine, seed=8)[0]
    assert np.abs(pixels(other) - pixels(seven)).mean() > 1
    # Image i of a batch uses seed + i: the first of a batch of two is the seed-7 image, up to the
    # last bits that batched float kernels round differently.
    batch = generate(engine, batch=2)
    assert [img.info["seed"] for img in batch] == ["7", "8"]
    seed_gap = np.abs(pixels(other) - pixels(seven)).mean()
    assert np.abs(pixels(batch[0]) - pixels(seven)).mean() < 0.05 * seed_gap
    assert np.abs(pixels(batch[1]) - pixels(other)).mean() < 0.05 * seed_gap
    # A random seed is recorded, so the image can be made again.
    random = generate(engine, seed=-1)[0]
    seed = int(random.info["seed"])
    assert np.array_equal(pixels(generate(engine, seed=seed)[0]), pixels(random))


def test_the_parameters_are_in_the_png_and_read_back(engine, seven, tmp_path):
    text = seven.info["parameters"]
    assert text.startswith("a photo of a cat\nNegative prompt: blurry\nSteps: 2, Sampler: DDIM, CFG scale: 7.0")
    path = save_png(seven, tmp_path / "seven.png")
    with Image.open(path) as png:
        assert png.text["parameters"] == text  # a tEXt chunk named 'parameters', as A1111 writes
        assert np.array_equal(pixels(png.convert("RGB")), pixels(seven))
    read = read_parameters(path)
    assert read["prompt"] == "a photo of a cat" and read["negative_prompt"] == "blurry"
    assert read["Steps"] == 2 and read["Seed"] == 7 and read["CFG scale"] == 7.0
    assert (read["width"], read["height"]) == (64, 64) and read["Model"] == NAME and read["Mode"] == "txt2img"
    assert read["Tier"] == "full (sdpa)"
    # Awkward prompts survive: commas, quotes, colons, several lines, non-Latin-1 text (iTXt).
    prompt = 'a "red" cat, sitting: on a mat\nsecond line, ünïcode 猫'
    fields = {"Steps": 3, "Sampler": "Euler a", "CFG scale": 5.5, "Seed": 123, "Size": "512x768",
              "Model": "sd, v1.5: \"pruned\""}
    image = Image.new("RGB", (8, 8))
    image.info["parameters"] = format_parameters(prompt, "ugly, low quality", fields)
    back = read_parameters(save_png(image, tmp_path / "odd.png"))
    assert back["prompt"] == prompt and back["negative_prompt"] == "ugly, low quality"
    assert back["Model"] == 'sd, v1.5: "pruned"' and back["Sampler"] == "Euler a"
    assert (back["Steps"], back["Seed"], back["CFG scale"], back["width"], back["height"]) == (3, 123, 5.5, 512, 768)
    # A1111's own text reads too.
    a1111 = parse_parameters("cat\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, "
                                "Seed: 42, Size: 512x512, Model hash: abc123, Model: v1-5")
    assert a1111["Sampler"] == "DPM++ 2M Karras" and a1111["Seed"] == 42 and a1111["Model hash"] == "abc123"


def test_progress_is_reported_per_step(engine):
    steps = []
    generate(engine, progress=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 2), (2, 2)]


def test_img2img_and_inpaint_run_and_reproduce(engine, seven):
    start = seven.resize((96, 64))  # resized to the request's size
    out = generate(engine, "img2img", image=start, strength=0.75)[0]
    assert out.size == (64, 64) and "Denoising strength: 0.75" in out.info["parameters"]
    assert np.array_equal(pixels(generate(engine, "img2img", image=start, strength=0.75)[0]), pixels(out))
    assert np.abs(pixels(generate(engine, "img2img", image=start, strength=0.75, seed=8)[0]) - pixels(out)).mean() > 1

    mask = np.zeros((64, 64), bool)
    mask[:, 40:] = True  # repaint the right part, e.g. a mask from the Segment tab
    painted = generate(engine, "inpaint", image=seven, mask=mask, strength=1.0, prompt="a red cat")[0]
    assert painted.size == (64, 64) and "Mode: inpaint" in painted.info["parameters"]
    keep = 40 - 2 * feather_px(64, 64) - 1  # beyond the feathered seam the picture is untouched
    assert np.array_equal(pixels(painted)[:, :keep], pixels(seven)[:, :keep])
    assert np.abs(pixels(painted)[:, 42:] - pixels(seven)[:, 42:]).mean() > 5
    # A mask as a drawn RGBA layer (alpha) or a grey PNG works the same.
    layer = np.zeros((64, 64, 4), np.uint8)
    layer[:, 40:, 3] = 255
    assert np.array_equal(np.asarray(to_mask(Image.fromarray(layer))), np.asarray(to_mask(mask)))


def test_bad_requests_get_clear_messages(engine, seven):
    cases = [
        ("txt2img", dict(prompt="  "), "Write a prompt"),
        ("txt2img", dict(steps=0), "Steps must be 1 to 150"),
        ("txt2img", dict(width=4000), "Width and height must be 64 to 2048"),
        ("txt2img", dict(batch=20), "batch job"),
        ("img2img", dict(), "needs an input image"),
        ("img2img", dict(steps=2, strength=0.3), "Steps x strength is below 1"),
        ("inpaint", dict(), "needs an input image"),
    ]
    for mode, changes, message in cases:
        with pytest.raises(DiffusionInputError, match=message):
            check_request(mode, request(**changes), image=seven if mode != "txt2img" and "strength" in changes else None)
    with pytest.raises(DiffusionInputError, match="Inpaint needs a mask"):
        generate(engine, "inpaint", image=seven)


def test_a_single_file_checkpoint_loads_to_the_same_pipeline(engine, files, seven, tmp_path):
    assert single_file_type(files["single"]) == "v1"
    # With the family's configs (here a folder of .json/.txt only, no weights) it is the same model.
    model = DiffusionModel("tiny-sd-file", str(files["single"]), config=str(files["config"]))
    assert not list(files["config"].rglob("*.safetensors"))
    register(engine, model)
    assert diffusion_models(engine) == [NAME, "tiny-sd-file"]
    assert engine.registry.get("tiny-sd-file").estimate_bytes == engine.registry.get(NAME).estimate_bytes
    single = generate(engine, name="tiny-sd-file")[0]
    assert np.array_equal(pixels(single), pixels(seven))
    # Without configs the error says what to download (the loader never downloads: no network here).
    with pytest.raises(DiffusionSetupError, match=r"stable-diffusion-v1-5/stable-diffusion-v1-5.*hf download"):
        load_pipeline(DiffusionModel("no-config", str(files["single"])))
    # Pickle checkpoints are refused before anything reads them.
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04not really")
    with pytest.raises(DiffusionSetupError, match="pickle"):
        load_pipeline(DiffusionModel("pickled", str(pickle)))
    with pytest.raises(DiffusionSetupError, match="no model_index.json"):
        load_pipeline(DiffusionModel("empty", str(tmp_path)))


def test_a_batch_job_makes_every_image_with_its_seed(engine, seven):
    params = {"model": NAME, "mode": "txt2img", "count": 2, "request": json.loads(json.dumps(
        {"prompt": "a photo of a cat", "negative_prompt": "blurry", "steps": 2, "guidance": 7.0,
         "width": 64, "height": 64, "seed": 7}))}
    # The capability's check refuses a job it could never run at submit, before it queues.
    with pytest.raises(UserFacingError, match="A batch job makes 1 to 500 images"):
        engine.jobs.submit(batch_capability(NAME), {**params, "count": 0})
    with pytest.raises(UserFacingError, match="img2img needs an input image"):
        engine.jobs.submit(batch_capability(NAME), {**params, "mode": "img2img"})
    job_id = engine.jobs.submit(batch_capability(NAME), params)
    notes = []
    for job in engine.jobs.follow(job_id):
        notes.append(job["note"])
    assert job["state"] == "done", job["error"]
    assert job["model"] == NAME  # the queue groups batch jobs by their model
    assert any("image 2 of 2, step 2/2" in n for n in notes if n)
    paths = batch_images(job["result"])
    assert len(paths) == 2 and [read_parameters(p)["Seed"] for p in paths] == [7, 8]
    with Image.open(paths[0]) as first:
        # The same image as the interactive seed-7 call, up to the last bits: job threads run torch
        # with fewer threads, which sums in another order.
        assert np.abs(pixels(first.convert("RGB")) - pixels(seven)).max() <= 2
    with zipfile.ZipFile(job["result"]) as archive:
        assert sorted(archive.namelist()) == ["0000-7.png", "0001-8.png"]
    assert job["runs"][0]["tier"] == "full (sdpa)"


def test_the_tab_builds_with_and_without_models(engine, tmp_path):
    import gradio as gr

    import tabs.generate
    from tabs.generate import tab

    assert tabs.generate.unavailable() is None
    empty = Engine(tmp_path / "empty")
    with gr.Blocks() as demo:
        tab.build(empty)
    apis = endpoints(demo)
    assert {"txt2img", "img2img", "inpaint", "generate_batch", "png_info"} <= set(apis)
    with pytest.raises(gr.Error, match="add one in the Models tab"):
        apis["txt2img"]("", "a cat")
    # The handlers are module-level functions: called with an engine, without Gradio.
    with pytest.raises(UserFacingError, match="add one in the Models tab"):
        tab.txt2img(empty, "", "a cat")
    # The inpaint editor's painted layer (alpha) and an uploaded mask become one mask for the API.
    split = named(demo, "split_editor")
    background = np.full((32, 48, 3), 90, np.uint8)
    layer = np.zeros((32, 48, 4), np.uint8)
    layer[:, :10, 3] = 255
    uploaded = np.zeros((16, 24), np.uint8)
    uploaded[:, 20:] = 255  # half size: scaled to the picture
    picture, mask = split({"background": background, "layers": [layer], "composite": background}, uploaded)
    assert picture.shape == (32, 48, 3) and mask.shape == (32, 48)
    assert mask[:, :10].all() and mask[:, 40:].all() and not mask[:, 12:38].any()
    with pytest.raises(gr.Error, match="Paint over the part"):
        split({"background": background, "layers": [np.zeros((32, 48, 4), np.uint8)]}, None)

    with gr.Blocks() as demo:
        tab.build(engine)
    apis = endpoints(demo)
    shown, info = apis["txt2img"](NAME, "a photo of a cat", "blurry", 2, 7.0, 64, 64, 7, 1,
                                     progress=lambda *a, **k: None)
    image, caption = shown[0]
    assert caption == "seed 7" and info["seeds"] == [7] and info["tier"] == "full (sdpa)"
    saved = list((engine.data_dir / "outputs" / "txt2img").rglob("*.png"))
    assert saved and read_parameters(saved[-1])["Seed"] == 7


def test_the_store_kind_recognises_diffusion_models_and_registers_them_once(files, tmp_path):
    import tabs.generate as generate

    assert generate.STORE_KIND == "diffusion"
    assert generate.recognises(files["folder"]) and generate.recognises(files["single"])
    assert not generate.recognises(tmp_path)
    engine = Engine(tmp_path / "data")
    entry = {"name": "added", "path": str(files["folder"]), "source": "a folder"}
    generate.store_added(engine, entry)
    generate.store_added(engine, entry)  # announced again: nothing changes
    assert diffusion_models(engine) == ["added"] and batch_capability("added") in engine.jobs.kinds
    with pytest.raises(UserFacingError, match="already has a model named 'added'"):
        generate.store_added(engine, {**entry, "path": str(files["single"])})
    generate.store_removed(engine, entry)
    assert diffusion_models(engine) == []
    index = {"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "DDIMScheduler"]}
    repo = ["model_index.json", "v1-5-pruned.safetensors", "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"]
    assert generate.store_repo_files(repo, None, lambda name: index) == [
        "model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in generate.store_repo_files(repo, "fp16", lambda name: index)
    assert generate.store_repo_files(["config.json", "model.safetensors"], None, lambda name: {}) is None


def test_the_cost_of_a_generation_is_told_before_it_runs(engine):
    """The txt2img button's cost line: its time follows pixels x images x steps, its memory the
    pixels; after two runs of the tiny model the next request's cost is known before it runs."""
    from engine.costs import estimate
    from tabs.generate import tab
    from tabs.generate.costs import chosen_model, txt2img_bucket, txt2img_size
    from ui.costs import as_request, cost_text

    def values(width, steps, batch=1):
        return [NAME, "a photo of a cat", "", steps, 0.0, width, 64, 7, batch]

    assert txt2img_size(*values(64, 2, 2)) == f"pxsteps:{64 * 64 * 2 * 2}"
    assert txt2img_bucket(*values(64, 2, 2)) == "px:8192"   # as _run opens its run
    run = as_request(tab.txt2img, "txt2img", [], size=txt2img_size)
    for width, steps in ((64, 2), (128, 4)):
        images, info = run(engine, *values(width, steps))
        assert len(images) == 1
    record = next(r for r in engine.runs.latest(5) if r.capability == "txt2img")
    assert (record.endpoint, record.size, record.bucket) == ("txt2img", "pxsteps:32768", "px:8192")
    # The endpoint may have run with other models (a test above adds a second one): this request
    # uses the one picked.
    cost = estimate(engine, "txt2img", txt2img_size(*values(96, 3)), txt2img_bucket(*values(96, 3)),
                    chosen_model(*values(96, 3)))
    assert cost.known and [m.name for m in cost.models] == [NAME]
    assert cost.models[0].resident and cost.seconds is not None and cost.seconds > 0
    assert "megapixel-steps" in cost_text(cost)
