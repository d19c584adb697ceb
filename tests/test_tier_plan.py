"""Memory tiers planned per request: from the engine's reading of the device now and the request's
size, on the real tiny Stable Diffusion pipeline through the engine. The CPU ladder is
full -> full + vae_tiling -> full + vae_tiling + attention_slicing.

The room is moved through the engine's own seams: another model held by another caller (the
engine counts it against the budget), that model evicted, and the budget. OOMs are real
allocation failures (torch's CPU allocator refusing 1 PiB, as in test_oom.py), raised from inside
the pipeline's step callback while it runs at the tier that is to fail."""
import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from engine import Engine
from tabs.generate import tier_plan as tp
from tabs.generate import tiers as mt
from tabs.generate.checkpoint import DiffusionModel
from tabs.generate.pipeline import generate as generate_images
from tabs.generate.registry import register
from tabs.generate.request import Request
from tiny_diffusion import save_tiny_pipeline
from tiny_models import MiB, block_spec, leased_elsewhere

GiB = 1024**3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL, TILED = "full (sdpa)", "full + vae_tiling (sdpa)"
SMALL = Request("a photo of a cat", steps=2, guidance=7.0, width=64, height=64, seed=11)


# ---------------------------------------------------------------------------------- the numbers

def test_the_activation_estimate_grows_with_width_height_and_batch():
    base = tp.estimate_run_bytes(512, 512, 1)
    assert tp.estimate_run_bytes(1024, 512, 1) - base == base - 256 * MiB  # twice the pixels
    assert tp.estimate_run_bytes(512, 512, 3) - 256 * MiB == 3 * (base - 256 * MiB)
    assert tp.estimate_run_bytes(512, 512, 1, dtype_bytes=4) - 256 * MiB == 2 * (base - 256 * MiB)


def test_a_bigger_request_takes_a_lower_tier_in_the_same_memory():
    size = mt.PipelineSize(total=2 * GiB, largest_component=1600 * MiB, largest_group=400 * MiB, largest_layer=60 * MiB)
    memory = tp.MemoryReading("cuda:0", free=4 * GiB, budget_left=8 * GiB)
    small = tp.plan_tier(size, memory, run_bytes=tp.estimate_run_bytes(512, 512, 1), attention="sdpa", what="512x512 x1")
    assert small.tier.label == FULL and small.fits and small.need <= memory.available
    larger = [tp.choose_tier(size, memory, run_bytes=tp.estimate_run_bytes(side, side, batch), attention="sdpa")
              for side, batch in ((1024, 1), (1024, 2))]
    assert [(t.placement, t.vae_tiling) for t in larger] == [("full", True), ("group_offload", True)]
    assert small.tier.reason.startswith("512x512 x1: needs about 2.") and "4.00 GiB available on cuda:0" in small.tier.reason


def test_what_the_pipeline_holds_counts_as_its_own_room():
    # 1 GiB free beside the 2 GiB the pipeline holds: a climb to a 2.8 GiB tier fits; the budget
    # still caps it, and the reserve comes off.
    memory = tp.MemoryReading("cuda:0", free=GiB, budget_left=10 * GiB, reserve=200 * MiB, own=2 * GiB)
    assert memory.available == 3 * GiB - 200 * MiB
    assert tp.MemoryReading("cuda:0", free=GiB, budget_left=2 * GiB, own=2 * GiB).available == 2 * GiB
    assert "+ 2.00 GiB it holds" in memory.describe()


def test_an_oom_raises_the_activation_estimate_to_what_was_left():
    plan = tp.Plan(mt.Tier(), weights=100 * MiB, run=300 * MiB, available=500 * MiB, fits=True)
    scale = tp.oom_scale(plan, 1.0)
    assert scale == pytest.approx(400 / 300 * tp.OOM_MARGIN)  # 400 MiB was left beside the weights
    assert tp.oom_scale(plan, 2.0) == pytest.approx(2 * 400 / 300 * tp.OOM_MARGIN)
    assert tp.oom_scale(tp.Plan(mt.Tier(), 100 * MiB, 300 * MiB, 350 * MiB, fits=False), 1.5) == 1.5
    assert tp.oom_scale(None, 1.0) == 1.0


def test_the_engine_reading_counts_other_models_and_the_reserve(tmp_path):
    engine = Engine(tmp_path / "data", budget="cpu=2GiB", reserve="100MiB", specs=[block_spec(tmp_path, "other", 48)])
    engine.preload("other")
    held = engine.pool.resident_bytes("cpu")
    assert 47 * MiB <= held <= 60 * MiB
    reading = tp.read_memory(engine, "cpu", own_bytes=0, own_device_bytes=5 * MiB)
    assert reading.budget_left == 2 * GiB - held and reading.reserve == 100 * MiB and reading.own == 5 * MiB
    assert reading.available == min(reading.free + 5 * MiB, 2 * GiB - held) - 100 * MiB
    # A model counts nothing against itself.
    assert tp.read_memory(engine, "cpu", own_bytes=held).budget_left == 2 * GiB


# ---------------------------------------------------------------------------------- on the tiny pipeline

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return DiffusionModel("tiny-sd", str(save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "sd")))


def generate(engine, request=SMALL, progress=None):
    with engine.run("txt2img") as run:
        images = generate_images(run.call, "tiny-sd", "txt2img", request, progress=progress)
    return run.record, np.asarray(images[0], np.int16)


def oom_at(tier_label, pipe_of):
    """A step callback that fails a real allocation while the pipeline runs at `tier_label`."""
    def progress(step, total):
        if pipe_of().tier.label == tier_label:
            torch.empty(2**48)  # 1 PiB: "DefaultCPUAllocator: can't allocate memory"
    return progress


def test_the_tier_is_planned_per_request_and_moves_both_ways(tiny, tmp_path, monkeypatch):
    resets = []
    real_reset = mt.reset_tier
    monkeypatch.setattr(mt, "reset_tier", lambda *a, **k: (resets.append(1), real_reset(*a, **k)))
    engine = Engine(tmp_path / "data", reserve=0, wait_timeout_s=30, specs=[block_spec(tmp_path, "ballast", 160)])
    register(engine, tiny)
    pipe_of = lambda: next(i.model for i in engine.pool._instances if i.spec.name == "tiny-sd")  # noqa: E731
    full_run = tp.estimate_run_bytes(64, 64, 1, 4)  # fp32 on the CPU

    # 1. Room for the full tier: the budget leaves 350 MiB beside what the pipeline holds.
    record, _ = generate(engine)  # loads it (the load picks a tier too) and learns its footprints
    own = engine.pool.resident_bytes("cpu")
    weights = pipe_of().size.total
    engine.devices.budgets["cpu"] = own + 350 * MiB
    assert weights + full_run < own + 350 * MiB < weights + 2 * full_run
    resets.clear()
    record, reference = generate(engine)
    assert record.tier == FULL and record.ooms == 0
    assert record.steps[0].startswith("memory tier full (sdpa), planned for 64x64 x1: needs about")
    assert "available on cpu (free" in record.steps[0]

    # 2. Less room: another caller holds a 160 MiB model, which the engine counts against the budget.
    # (The pool still admits the request: it reserves the run peak it measured, far below 190 MiB.)
    learned = engine.footprints.run_bytes(engine.registry.get("tiny-sd"), "cpu", None)
    assert learned < 150 * MiB
    with leased_elsewhere(engine, "ballast"):
        record, _ = generate(engine)
        assert record.tier == TILED, record.steps
        row = next(r for r in engine.status()["tiers"] if r["model"] == "tiny-sd")
        assert row["tier"] == TILED and "planned for 64x64 x1" in row["why"] and "budget left" in row["why"]
    # 3. The model is evicted: the room is back, the next request climbs to full, same pixels.
    engine.pool.unload("ballast")
    record, pixels = generate(engine)
    assert record.tier == FULL and np.array_equal(pixels, reference)
    # A request of eight times the pixels (128x128, two images) does not fit the full tier in it.
    big = Request("a photo of a cat", steps=2, guidance=7.0, width=128, height=128, seed=11, batch=2)
    record, _ = generate(engine, big)
    assert record.tier == TILED and "planned for 128x128 x2" in record.steps[0]

    # 4. A real OOM at the full tier: freed memory twice, then one rung down for the retry.
    record, _ = generate(engine, progress=oom_at(FULL, pipe_of))
    assert record.status == "ok" and record.ooms == 3 and record.tier == TILED
    assert record.steps[0].startswith("memory tier full (sdpa)")
    assert record.steps[-1] == f"degraded: memory tier {FULL} -> {TILED}"
    # The same room again: the OOM taught the plan that full needs more than there was.
    record, _ = generate(engine)
    assert record.tier == TILED and record.ooms == 0 and "since an out-of-memory" in record.steps[0]
    # Memory back (a larger budget): planned afresh, the tier climbs to full.
    engine.devices.budgets["cpu"] = own + 600 * MiB
    record, pixels = generate(engine)
    assert record.tier == FULL and record.ooms == 0 and np.array_equal(pixels, reference)
    # On the CPU every rung is the full placement: the tier changes above moved no weight.
    assert resets == []


def test_the_same_tier_again_costs_nothing_and_a_placement_change_undoes_the_old(tiny, monkeypatch):
    from tabs.generate.pipeline import load

    pipe = load(tiny, "cpu", tier=mt.ladder("cpu")[0])
    calls = []
    monkeypatch.setattr(pipe.base, "to", lambda *a, **k: calls.append("to"))
    real_reset = mt.reset_tier
    monkeypatch.setattr(mt, "reset_tier", lambda *a, **k: (calls.append("reset"), real_reset(*a, **k)))
    started = time.perf_counter()
    for _ in range(100):
        pipe.set_tier(dataclasses.replace(mt.ladder("cpu")[0], reason="again"))
    assert calls == [] and time.perf_counter() - started < 0.5 and pipe.tier.reason == "again"
    pipe.set_tier(mt.ladder("cpu")[1])
    assert calls == [] and pipe.base.vae.use_tiling
    monkeypatch.undo()
    pipe.set_tier(mt.ladder("cpu")[0])
    reference = np.asarray(pipe.generate("txt2img", SMALL)[0], np.int16)
    # The offload machinery runs with the CPU as the onload device (no saving, but the hooks are
    # set up and undone): up from group offloading to model offloading, then to full.
    pipe.set_tier(mt.Tier("group_offload", device="cpu"))
    pipe.set_tier(mt.Tier("model_offload", device="cpu"))
    assert pipe.base._all_hooks and not pipe.base.vae.use_tiling
    assert np.array_equal(np.asarray(pipe.generate("txt2img", SMALL)[0], np.int16), reference)
    pipe.set_tier(mt.ladder("cpu")[0])
    assert np.array_equal(np.asarray(pipe.generate("txt2img", SMALL)[0], np.int16), reference)
    # Every weight in RAM again: the file's tensors, and buffers the file does not hold (CLIP's
    # position ids, 616 bytes).
    assert pipe.base._all_hooks == [] and 0 <= pipe.device_bytes - pipe.size.total < 4096
    pipe.close()


def test_bench_gpu_says_there_is_no_gpu_and_exits_non_zero_at_once():
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench", "gpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert "no GPU" in done.stderr and "nothing was run" in done.stderr
    assert time.perf_counter() - started < 60
