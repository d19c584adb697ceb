"""The engine on a real CUDA device: whole-device memory, leases, unloading and real CUDA OOM;
the diffusion memory tiers planned per request under another process's real allocation.

These need a GPU; on a machine without one they are skipped (and reported as skipped)."""
import subprocess
import sys

import pytest
import torch

from engine import Engine, OutOfMemory
from engine.devices import Devices, read_memory
from tiny_models import MiB, block_spec

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"), pytest.mark.gpu]


def gpu_spec(tmp_path, name, mib, role="heavy"):
    spec = block_spec(tmp_path, name, mib, role=role)
    return type(spec)(**{**spec.__dict__, "device": "auto"})


def cuda_forward(model):
    with torch.inference_mode():
        return model(torch.ones(4, 512, device="cuda:0")).sum().item()


def test_cuda_memory_counts_the_whole_device():
    devices = Devices()
    assert devices.default == "cuda:0" and "cuda:0" in devices.names
    free, total = torch.cuda.mem_get_info(0)
    memory = read_memory("cuda:0")
    assert memory.total == total
    assert abs(memory.free - free) < 64 * MiB
    # Memory torch's allocator holds is seen as used by the device-wide reading.
    before = read_memory("cuda:0").free
    block = torch.empty(512 * MiB, dtype=torch.uint8, device="cuda:0")
    assert before - read_memory("cuda:0").free >= 500 * MiB
    del block
    torch.cuda.empty_cache()


def test_models_load_run_and_unload_on_cuda_within_budget(tmp_path):
    engine = Engine(tmp_path / "data", budget="cuda:0=200MiB", reserve=0, wait_timeout_s=30,
                    specs=[gpu_spec(tmp_path, f"g{i}", 64) for i in range(4)])
    # The first matmul creates cuBLAS's handle and workspace, which live as long as the process:
    # take them before the baseline so that only the models are compared.
    (torch.ones(4, 512, device="cuda:0") @ torch.ones(512, 512, device="cuda:0")).sum().item()
    torch.cuda.empty_cache()
    base_free = read_memory("cuda:0").free
    for i in range(4):
        engine.infer("t", f"g{i}", cuda_forward)
        assert engine.pool.resident_bytes("cuda:0") <= 200 * MiB
    row = next(r for r in engine.pool.snapshot() if r["name"] == "g3")
    assert row["device"] == "cuda:0" and 63 * MiB <= row["bytes"] <= 66 * MiB
    assert len(engine.pool.eviction_log) >= 1
    record = engine.runs.latest(1)[0]
    assert record.device == "cuda:0" and record.peak_device_bytes > 64 * MiB
    for i in range(4):
        engine.pool.unload(f"g{i}")
    assert base_free - read_memory("cuda:0").free < 32 * MiB, "unloading must give device memory back"


def test_real_cuda_oom_is_recovered_by_degrading(tmp_path):
    engine = Engine(tmp_path / "data", reserve=0, specs=[gpu_spec(tmp_path, "net", 4)])
    total = torch.cuda.mem_get_info(0)[1]
    plan = {"bytes": 2 * total}

    def allocate(model):
        scratch = torch.empty(plan["bytes"], dtype=torch.uint8, device="cuda:0")
        return cuda_forward(model) + scratch.numel() * 0

    def degrade(n):
        plan["bytes"] = 64 * MiB
        return "scratch 64 MiB" if n == 1 else None

    engine.infer("t", "net", allocate, degrade=degrade)
    record = engine.runs.latest(1)[0]
    assert record.status == "ok" and record.ooms == 3
    assert record.steps[-1] == "degraded: scratch 64 MiB"
    assert any("empty_cache" in step for step in record.steps)

    plan["bytes"] = 2 * total
    with pytest.raises(OutOfMemory, match="degraded: scratch 64 MiB|ran out of memory"):
        engine.infer("t", "net", allocate, degrade=lambda n: None)


def test_face_detector_on_cuda_matches_cpu():
    import skimage.data

    from analysers.face_detector import detect_faces, load_mtcnn

    image = skimage.data.astronaut()
    on_cpu = detect_faces(load_mtcnn("cpu"), image)
    on_gpu = detect_faces(load_mtcnn("cuda:0"), image)
    assert len(on_gpu) == len(on_cpu) == 1
    for a, b in zip(on_cpu[0]["box"], on_gpu[0]["box"]):
        assert abs(a - b) < 1.0


# ---------------------------------------------------------------------------------- memory tiers

# Another process that holds CUDA memory (as in ComfyUI issue 14396: a second program on the
# same GPU): each line on its stdin is a byte count it then holds, in one tensor.
HOLDER = """
import sys, torch
torch.cuda.init()
torch.empty(1, device="cuda:0")  # its context exists before the test measures anything
print("ready", flush=True)
block = None
for line in sys.stdin:
    block = None
    torch.cuda.empty_cache()
    if int(line) > 0:
        block = torch.empty(int(line), dtype=torch.uint8, device="cuda:0")
    torch.cuda.synchronize()
    print("held", flush=True)
"""


class Holder:
    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready"

    def hold(self, nbytes: int) -> None:
        self.process.stdin.write(f"{max(0, int(nbytes))}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "held"

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def holder():
    other = Holder()
    yield other
    other.close()


def leave_room(engine, holder, room: int, own_device_bytes: int = 0):
    """Make the other process hold all but `room` of what the engine sees available; the reading."""
    from tabs.generate import tier_plan as tp

    holder.hold(0)
    torch.cuda.empty_cache()  # the pool's headroom does not count this process's cached blocks
    available = tp.read_memory(engine, "cuda:0", own_device_bytes=own_device_bytes).available
    holder.hold(available - room)
    reading = tp.read_memory(engine, "cuda:0", own_device_bytes=own_device_bytes)
    assert abs(reading.available - room) < 64 * MiB, (reading, room)
    return reading


def test_each_cuda_tier_is_chosen_under_an_external_allocation_that_leaves_its_room(tmp_path, holder):
    """The real reading (every process counted) under a real allocation by another process, for a
    pipeline sized like SD 1.5 in fp16 (the tiny pipeline's rungs are a few MiB apart, closer
    than a reading can be set): each rung is chosen where exactly its room is left."""
    from tabs.generate import tier_plan as tp
    from tabs.generate import tiers as mt

    size = mt.PipelineSize(total=2048 * MiB, largest_component=1640 * MiB, largest_group=400 * MiB,
                           largest_layer=60 * MiB)
    run = tp.estimate_run_bytes(512, 512, 1)
    engine = Engine(tmp_path / "data", reserve=0)
    rungs = mt.ladder("cuda:0", "sdpa")
    needs = [size.device_bytes(t.placement) + int(run * (tp.TILED_RUN_FACTOR if t.vae_tiling else 1)) for t in rungs]
    rooms = [needs[0] + 256 * MiB] + [(needs[i] + needs[i - 1]) // 2 for i in range(1, len(rungs) - 1)]
    rooms.append(needs[-2] // 2)  # nothing fits: the bottom rung, said so
    for tier, room in zip(rungs, rooms):
        reading = leave_room(engine, holder, room)
        chosen = tp.choose_tier(size, reading, run_bytes=run, attention="sdpa")
        assert chosen == tier, (chosen.label, tier.label, reading)
        assert ("does not fit" in chosen.reason) == (tier is rungs[-1])


def tiny_diffusion_engine(tmp_path):
    from tabs.generate.checkpoint import DiffusionModel
    from tabs.generate.registry import register
    from tiny_diffusion import save_tiny_pipeline

    engine = Engine(tmp_path / "data", reserve=0, wait_timeout_s=60)
    register(engine, DiffusionModel("tiny-sd", str(save_tiny_pipeline(tmp_path / "sd"))))
    return engine


def test_a_pipeline_tier_follows_another_process_memory_and_an_oom_both_ways(tmp_path, holder):
    from tabs.generate import tier_plan as tp
    from tabs.generate.pipeline import generate
    from tabs.generate.request import Request

    from tabs.generate import tiers as mt
    from tabs.generate.pipeline import load

    engine = tiny_diffusion_engine(tmp_path)
    request = Request("a photo of a cat", steps=2, guidance=7.0, width=256, height=256, seed=3)
    full, tiled = "full (sdpa)", "full + vae_tiling (sdpa)"
    # The process's first convolutions load kernels and make cuDNN's handle: done here once, so that
    # the engine learns the pipeline's own run peak, not the CUDA set-up (the pool reserves it).
    warm = load(engine.registry.get("tiny-sd").loader.model, "cuda:0", tier=mt.ladder("cuda:0")[0])
    warm.generate("txt2img", request)
    warm.close()
    torch.cuda.empty_cache()

    def txt2img(progress=None):
        with engine.run("txt2img") as run:
            generate(run.call, "tiny-sd", "txt2img", request, progress=progress)
        return run.record

    first = txt2img()
    assert first.device == "cuda:0" and first.tier == full and first.ooms == 0
    pipe = next(i.model for i in engine.pool._instances if i.spec.name == "tiny-sd")
    weights, run = pipe.size.total, tp.estimate_run_bytes(256, 256, 1, 2)
    # Room between the tiled and the full tier's needs, left by another process.
    leave_room(engine, holder, weights + int(0.8 * run), own_device_bytes=pipe.device_bytes)
    record = txt2img()
    assert record.tier == tiled and record.ooms == 0, record.steps
    # The other process lets go: the next request climbs back to full.
    holder.hold(0)
    assert txt2img().tier == full
    # A real CUDA OOM at the full tier (the allocator refusing twice the device) while the other
    # process holds half of what there is: one rung down for the retry.
    leave_room(engine, holder, tp.read_memory(engine, "cuda:0", own_device_bytes=pipe.device_bytes).available // 2,
               own_device_bytes=pipe.device_bytes)
    total = torch.cuda.mem_get_info(0)[1]

    def oom_at_full(step, steps):
        if pipe.tier.label == full:
            torch.empty(2 * total, dtype=torch.uint8, device="cuda:0")

    record = txt2img(progress=oom_at_full)
    assert record.status == "ok" and record.ooms == 3 and record.tier == tiled
    assert record.steps[-1] == f"degraded: memory tier {full} -> {tiled}"
    # The same room: planned below full (the OOM raised the estimate); memory back: full again.
    record = txt2img()
    assert record.tier == tiled and "since an out-of-memory" in record.steps[0]
    holder.hold(0)
    torch.cuda.empty_cache()
    record = txt2img()
    assert record.tier == full and record.ooms == 0
    row = next(r for r in engine.status()["tiers"] if r["model"] == "tiny-sd")
    assert row["tier"] == full and "available on cuda:0" in row["why"]


def test_every_cuda_tier_is_put_in_place_and_undone_down_and_up_the_ladder(tmp_path):
    """set_tier down the whole CUDA ladder and back up (offload hooks removed, weights back from
    the meta device): each rung keeps what its placement says on the GPU, and the full tier
    after the climb gives the same pixels as before."""
    import numpy as np

    from tabs.generate import tiers as mt
    from tabs.generate.checkpoint import DiffusionModel
    from tabs.generate.pipeline import load
    from tabs.generate.request import Request
    from tiny_diffusion import save_tiny_pipeline

    model = DiffusionModel("tiny-sd", str(save_tiny_pipeline(tmp_path / "sd")))
    request = Request("a photo of a cat", steps=2, guidance=7.0, width=128, height=128, seed=5)
    rungs = mt.ladder("cuda:0", "sdpa")
    pipe = load(model, "cuda:0", tier=rungs[0])
    reference = np.asarray(pipe.generate("txt2img", request)[0], np.int16)
    assert pipe.device_bytes >= pipe.size.total
    for tier in rungs[1:] + rungs[-2::-1]:
        pipe.set_tier(tier)
        image = np.asarray(pipe.generate("txt2img", request)[0], np.int16)
        if tier.placement == "full":
            assert pipe.device_bytes >= pipe.size.total, tier.label
        else:  # at rest an offload tier keeps (almost) nothing on the GPU
            assert pipe.device_bytes <= pipe.size.largest_component, tier.label
        if not tier.vae_tiling:
            assert np.abs(image - reference).max() <= 2, tier.label
    assert pipe.tier == rungs[0] and np.abs(image - reference).max() <= 2
    pipe.close()
    assert pipe.base is None


# ---- a model too large for one GPU, split over two (engine/device_map.py, lesson 8)

@pytest.fixture(scope="module")
def sam_b(tmp_path_factory):
    """sam-vit-base's architecture (358 MiB float32) with seeded random weights, saved as a store
    folder: the split is about placement, the same weights answer on the CPU for reference."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    folder = tmp_path_factory.mktemp("sam-b") / "sam"
    torch.manual_seed(0)
    SamModel(SamConfig()).save_pretrained(folder)
    SamProcessor(SamImageProcessor()).save_pretrained(folder)
    return folder


def _sam_picture():
    import numpy as np

    image = np.random.default_rng(0).integers(0, 60, (300, 400, 3), dtype=np.uint8)
    image[80:200, 100:300] = (220, 40, 40)
    return image


def test_sam_loads_through_a_device_map_onto_one_gpu(sam_b):
    """The loader's DeviceMap path on the one GPU a device check may have: parts mapped, loaded
    straight there, counted per device, the same mask as on the CPU."""
    import numpy as np

    from engine.device_map import DeviceMap
    from tabs.segment import model as sam

    parts = ("shared_image_embedding", "prompt_encoder", "vision_encoder", "mask_decoder")
    mapped = sam.load(sam_b, DeviceMap({p: "cuda:0" for p in parts}))
    whole = sam.load(sam_b, "cpu")
    assert set(mapped.device_shares) == {"cuda:0"}
    assert mapped.device_shares["cuda:0"] == whole.device_shares["cpu"]
    a, b = whole.segment(_sam_picture(), [[200, 140, 1]]), mapped.segment(_sam_picture(), [[200, 140, 1]])
    assert np.mean(a.mask == b.mask) > 0.999 and a.scores == pytest.approx(b.scores, abs=2e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_sam_too_large_for_either_gpu_budget_runs_split_over_two(tmp_path, sam_b):
    import dataclasses

    import numpy as np

    from engine.device_map import DeviceMap
    from tabs.segment import model as sam

    engine = Engine(tmp_path / "data", budget="cuda:0=250MiB,cuda:1=250MiB", reserve=0, wait_timeout_s=30)
    spec = sam.model_spec({"name": "sam-b", "path": str(sam_b), "bytes": 375_000_000})
    engine.register(dataclasses.replace(spec, run_estimate_bytes=16 * MiB))
    before = [torch.cuda.memory_allocated(d) for d in (0, 1)]
    with engine.run("segment") as run:
        result = sam.segment(run.call, "sam-b", _sam_picture(), [[200, 140, 1]])
    (instance,) = engine.pool._instances
    assert isinstance(instance.device, DeviceMap) and instance.device.devices == ("cuda:0", "cuda:1")
    shares = instance.model.device_shares
    assert set(shares) == {"cuda:0", "cuda:1"} and all(s <= 250 * MiB for s in shares.values())
    assert all(engine.pool.resident_bytes(d) == shares[d] for d in shares)
    assert all(torch.cuda.memory_allocated(d) - before[d] >= shares[f"cuda:{d}"] for d in (0, 1))
    reference = sam.load(sam_b, "cpu").segment(_sam_picture(), [[200, 140, 1]])
    assert np.mean(reference.mask == result.mask) > 0.999
    assert reference.scores == pytest.approx(result.scores, abs=2e-3)
    assert engine.pool.unload("sam-b") == 1
