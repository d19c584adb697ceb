"""Memory tiers: the choice from injected memory readings, every tier a CPU can run on the tiny
Stable Diffusion pipeline, and an injected OOM that moves one tier down and retries (recorded)."""
import numpy as np
import pytest
import torch

from engine import Engine, OutOfMemory
from tabs.generate import tier_plan as tp
from tabs.generate import tiers as mt
from tabs.generate.checkpoint import DiffusionModel
from tabs.generate.pipeline import DiffusionPipe, generate as generate_images, load as load_model
from tabs.generate.registry import register
from tabs.generate.request import Request
from tiny_diffusion import save_tiny_pipeline

GiB, MiB = 1024**3, 1024**2

# A pipeline shaped like SD 1.5 in fp16: 2 GiB of weights, the UNet 1.6 GiB of it.
SIZE = mt.PipelineSize(total=2 * GiB, largest_component=1600 * MiB, largest_group=400 * MiB, largest_layer=60 * MiB)
RUN = 1 * GiB  # activations; VAE tiling halves the estimate


def reading(device, free, budget_left=None, reserve=0):
    return tp.MemoryReading(device, free=free, budget_left=free if budget_left is None else budget_left,
                            reserve=reserve)


def choose(device, free, **kwargs):
    attention = kwargs.pop("attention", "sdpa")
    return tp.choose_tier(SIZE, reading(device, free, **kwargs), run_bytes=RUN, attention=attention)


def rung(tier):
    return tier.placement, tier.vae_tiling, tier.attention_slicing


@pytest.mark.parametrize("free, expected", [
    (4 * GiB, ("full", False, False)),                        # 2 + 1 GiB fit
    (2600 * MiB, ("full", True, False)),                      # 2 + 0.5 GiB
    (2200 * MiB, ("model_offload", True, False)),             # 1.6 + 0.5 GiB
    (1000 * MiB, ("group_offload", True, False)),             # 0.4 + 0.5 GiB
    (600 * MiB, ("sequential_offload", True, False)),         # 0.06 + 0.5 GiB
    (200 * MiB, ("sequential_offload", True, True)),          # nothing fits: the bottom rung
])
def test_each_cuda_tier_is_chosen_from_the_free_memory(free, expected):
    tier = choose("cuda:0", free)
    assert rung(tier) == expected and tier.device == "cuda:0" and tier.attention == "sdpa"
    assert ("does not fit" in tier.reason) == (expected[2] is True)


def test_the_budget_and_the_reserve_count_like_free_memory():
    assert rung(choose("cuda:0", 16 * GiB, budget_left=2200 * MiB)) == ("model_offload", True, False)
    assert rung(choose("cuda:0", 4 * GiB, reserve=1500 * MiB)) == ("full", True, False)
    assert tp.MemoryReading("cuda:0", free=GiB, budget_left=-5, reserve=0).available == 0


def test_admission_uses_the_footprint_of_the_tier_an_empty_device_gives():
    # A 6 GiB GPU holds the whole pipeline; a 2.2 GiB one only the UNet at a time (model offload),
    # so the pool admits the load by the UNet's size instead of refusing a model that cannot fit whole.
    tier, load, run = tp.admission_estimate(SIZE, "cuda:0", 6 * GiB, 6 * GiB, 0, RUN)
    assert (tier.placement, load, run) == ("full", SIZE.total, RUN)
    tier, load, run = tp.admission_estimate(SIZE, "cuda:0", 2200 * MiB, 8 * GiB, 0, RUN)
    assert (tier.placement, load, run) == ("model_offload", 1600 * MiB, RUN // 2)
    assert tp.admission_estimate(SIZE, "cpu", 2200 * MiB, 8 * GiB, 0, RUN)[1] == SIZE.total


@pytest.mark.parametrize("free, expected", [
    (4 * GiB, ("full", False, False)),
    (2600 * MiB, ("full", True, False)),
    (1 * GiB, ("full", True, True)),
])
def test_the_cpu_never_gets_an_offload_tier_and_says_why(free, expected):
    tier = choose("cpu", free)
    assert rung(tier) == expected
    assert "need an accelerator" in tier.reason


def test_xformers_is_used_only_where_it_works_and_is_never_sliced_away():
    assert mt.xformers_status("cpu") == (False, "xformers runs on CUDA only")
    assert mt.attention_backend("cpu") == "sdpa"
    works, why = mt.xformers_status("cuda:0")
    if not works:  # not installed here, or installed for another torch/CUDA: the reason says which
        assert "xformers" in why and mt.attention_backend("cuda:0") == "sdpa"
    tier = choose("cuda:0", 200 * MiB, attention="xformers")
    assert rung(tier) == ("sequential_offload", True, False) and tier.attention == "xformers"
    assert [rung(t) for t in mt.ladder("cuda:0", "xformers")][-1] == ("sequential_offload", True, False)


def test_next_tier_walks_down_the_ladder_once_to_the_bottom():
    for device, length in (("cuda:0", 6), ("cpu", 3)):
        tiers, tier = [], mt.ladder(device)[0]
        while tier is not None:
            tiers.append(rung(tier))
            tier = mt.next_tier(tier)
        assert tiers == [rung(t) for t in mt.ladder(device)] and len(tiers) == length
    # A hand-set tier off the ladder steps to the next lower placement.
    assert rung(mt.next_tier(mt.Tier("model_offload", device="cuda:0"))) == ("group_offload", True, False)
    assert "full" in mt.Tier().label and "vae_tiling" in mt.ladder("cpu")[1].label
    with pytest.raises(ValueError, match="unknown placement"):
        mt.Tier("disk")


def test_pipeline_size_groups_blocks_like_group_offloading():
    size = mt.PipelineSize.from_tensors({
        "unet": {"down_blocks.0.resnets.0.conv1.weight": 300, "down_blocks.0.attentions.0.proj.weight": 200,
                 "down_blocks.1.resnets.0.conv1.weight": 100, "mid_block.resnets.0.conv1.weight": 150,
                 "conv_in.weight": 10},
        "vae": {"decoder.up_blocks.0.resnets.0.conv1.weight": 120, "encoder.conv_in.weight": 30},
        "text_encoder": {"encoder.layers.0.mlp.fc1.weight": 80, "encoder.layers.1.mlp.fc1.weight": 90},
    })
    assert size.total == 1080 and size.largest_component == 760
    assert size.largest_group == 500  # down_blocks.0 (a text encoder is one group: 170)
    assert size.largest_layer == 300
    assert size.device_bytes("model_offload") == 760 and size.device_bytes("full") == 1080


# ---------------------------------------------------------------------------------- on the tiny pipeline

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return DiffusionModel("tiny-sd", str(save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "sd")))


REQUEST = Request("a photo of a cat", steps=2, guidance=7.0, width=64, height=64, seed=11)


def pixels(pipe):
    return np.asarray(pipe.generate("txt2img", REQUEST)[0], np.int16)


def test_every_tier_a_cpu_can_run_runs_the_tiny_pipeline(tiny):
    """Each CPU rung runs; then the offload placements' machinery (hooks, reset between tiers) runs
    with the CPU as the onload device. That saves no memory (there is no accelerator), but shows
    apply_tier sets up and undoes each placement: the same seed gives the same pixels throughout.
    Sequential offload is left out: on the CPU, accelerate 1.15's meta-device round trip fails with
    "new() received an invalid combination of arguments" (its hooks are built for an accelerator);
    bench/gpu_tiers.py runs it on CUDA."""
    pipe = load_model(tiny, "cpu", tier=mt.ladder("cpu")[0])
    reference = pixels(pipe)
    for tier in mt.ladder("cpu")[1:]:
        pipe.set_tier(tier)
        image = pipe.generate("txt2img", REQUEST)[0]
        assert image.size == (64, 64)
        assert image.info["parameters"].endswith(f"Tier: {tier.label}, Version: wimmel")
    for placement in ("model_offload", "group_offload"):
        pipe.set_tier(mt.Tier(placement, device="cpu"))
        assert np.array_equal(pixels(pipe), reference), placement
    pipe.set_tier(mt.ladder("cpu")[0])
    assert np.array_equal(pixels(pipe), reference)
    assert pipe.placement == {"device": "cpu", "tier": "full (sdpa)", "why": ""}
    pipe.close()


def test_an_oom_moves_one_tier_down_and_retries(tiny, tmp_path, monkeypatch):
    engine = Engine(tmp_path / "data")
    register(engine, tiny)
    real = DiffusionPipe.generate
    tiers_tried = []

    def generate(self, *args, **kwargs):
        tiers_tried.append(self.tier.label)
        if not self.tier.vae_tiling:  # the full tier "runs out of memory"
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DiffusionPipe, "generate", generate)
    with engine.run("txt2img") as run:
        images = generate_images(run.call, "tiny-sd", "txt2img", REQUEST)
    record = run.record
    assert images[0].size == (64, 64)
    # Two rounds of freeing memory at the full tier, then one step down, which works.
    assert tiers_tried == ["full (sdpa)"] * 3 + ["full + vae_tiling (sdpa)"]
    assert record.ooms == 3 and record.retries == 3
    assert record.steps[-1] == "degraded: memory tier full (sdpa) -> full + vae_tiling (sdpa)"
    assert record.tier == "full + vae_tiling (sdpa)" and record.to_dict()["tier"] == record.tier
    assert "Tier: full + vae_tiling (sdpa)" in images[0].info["parameters"]
    # The next call, in the same memory, is planned below the tier that ran out (the OOM raised the
    # activation estimate: tier_plan.oom_scale), and the System tab's table says so.
    with engine.run("txt2img") as again:
        generate_images(again.call, "tiny-sd", "txt2img", REQUEST)
    assert again.record.ooms == 0 and again.record.tier == "full + vae_tiling (sdpa)"
    assert {"model": "tiny-sd", "device": "cpu", "tier": "full + vae_tiling (sdpa)"}.items() <= \
        next(r for r in engine.status()["tiers"] if r["model"] == "tiny-sd").items()


def test_at_the_bottom_of_the_ladder_the_oom_is_reported_with_every_step(tiny, tmp_path, monkeypatch):
    engine = Engine(tmp_path / "data")
    register(engine, tiny)

    def generate(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(DiffusionPipe, "generate", generate)
    with pytest.raises(OutOfMemory) as caught:
        with engine.run("txt2img") as run:
            generate_images(run.call, "tiny-sd", "txt2img", REQUEST)
    degraded = [s for s in run.record.steps if s.startswith("degraded")]
    assert degraded == ["degraded: memory tier full (sdpa) -> full + vae_tiling (sdpa)",
                        "degraded: memory tier full + vae_tiling (sdpa) -> full + vae_tiling + attention_slicing (sliced)"]
    assert "vae_tiling + attention_slicing" in str(caught.value)
    assert run.record.status == "error"
