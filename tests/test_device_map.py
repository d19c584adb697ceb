"""A model too large for one GPU split over two (lesson 8), on this CPU machine: accelerate plans the
real sam-vit-base architecture (its config on the meta device, 358 MiB of float32 weights) over the
rooms given; the real Pool places, accounts and evicts over two fake GPUs (Devices' test seam). The
dispatch onto real GPUs is tests/test_cuda.py's (skipped without two)."""
import pickle

import pytest

from engine import NotEnoughMemory
from engine.device_map import DeviceMap, device_of
from engine.devices import Devices, Memory, read_memory
from engine.models import FootprintStore, ModelSpec, Registry
from engine.pool import Pool
from tabs.segment import model as sam

MiB = 1024**2
TOTAL = 40 * 1024 * MiB


@pytest.fixture(scope="module")
def vit_base(tmp_path_factory):
    """SamLoader over a folder with sam-vit-base's config (SamConfig's defaults): plans need no weights."""
    from transformers import SamConfig

    folder = tmp_path_factory.mktemp("sam-vit-base")
    SamConfig().save_pretrained(folder)
    return sam.SamLoader("sam-vit-base", str(folder))


def layers_on(plan, device):
    return sorted(int(n.split(".")[2]) for n, d in plan.modules.items()
                  if n.startswith("vision_encoder.layers.") and d == device)


def test_the_planner_splits_sam_vit_base_layers_by_the_rooms(vit_base):
    sizes = __import__("accelerate").utils.compute_module_sizes(vit_base._meta or sam.meta_model(vit_base.path))
    assert 357 * MiB < sizes[""] < 358 * MiB
    small_first = vit_base.split({"cuda:0": 100 * MiB, "cuda:1": 300 * MiB})
    assert isinstance(small_first, DeviceMap) and small_first == "cuda:0" and small_first.label == "cuda:0+cuda:1"
    # 14 MiB of embeddings and two 27 MiB ViT blocks fit in 100 MiB beside accelerate's one-block reserve.
    assert layers_on(small_first, "cuda:0") == [0, 1] and layers_on(small_first, "cuda:1") == list(range(2, 12))
    large_first = vit_base.split({"cuda:0": 300 * MiB, "cuda:1": 100 * MiB})
    assert layers_on(large_first, "cuda:0") == list(range(9)) and layers_on(large_first, "cuda:1") == [9, 10, 11]
    for plan, rooms in ((small_first, (100, 300)), (large_first, (300, 100))):
        assert sum(plan.shares.values()) == sizes[""]
        assert all(plan.shares[d] <= r * MiB for d, r in zip(("cuda:0", "cuda:1"), rooms))
        # Blocks whose own forward combines their parts stay whole; the position embedding goes with the patches.
        assert not [n for n in plan.modules if n.startswith(("vision_encoder.layers.", "mask_decoder."))
                    and n.count(".") > (2 if n.startswith("vision") else 0)]
        assert device_of(plan.modules, "vision_encoder.pos_embed") == device_of(plan.modules, "vision_encoder.patch_embed")
        assert plan.modules["mask_decoder"] == "cuda:1"
    # 2 x 200 MiB holds 358 MiB only without accelerate's offload reserve (asked again without it).
    even = vit_base.split({"cuda:0": 200 * MiB, "cuda:1": 200 * MiB})
    assert even is not None and max(even.shares.values()) <= 200 * MiB
    assert vit_base.split({"cuda:0": 150 * MiB, "cuda:1": 150 * MiB}) is None
    assert vit_base.split({"cuda:0": 400 * MiB, "cuda:1": 10 * MiB}).devices == ("cuda:0",)


def test_a_device_map_is_its_first_device_as_a_str_and_survives_pickling():
    plan = DeviceMap({"a": "cuda:1", "b": "cuda:0"}, {"cuda:1": 3, "cuda:0": 5})
    assert plan == "cuda:1" and str(plan) == "cuda:1" and plan.devices == ("cuda:1", "cuda:0")
    again = pickle.loads(pickle.dumps(plan))
    assert isinstance(again, DeviceMap) and again.modules == plan.modules and again.shares == plan.shares
    assert plan.with_shares({"cuda:0": 7}).shares == {"cuda:1": 0, "cuda:0": 7}
    assert device_of({"": "cuda:0"}, "x.y") == "cuda:0" and device_of({"x": "cuda:1", "x.y": "cuda:0"}, "x.y.z") == "cuda:0"


# ---- the pool over two fake GPUs

class GPUs:
    """Two fake GPUs: loads take their bytes from `free`, unloads give them back."""

    def __init__(self, cuda_0, cuda_1, budgets=None):
        self.free = {"cuda:0": cuda_0 * MiB, "cuda:1": cuda_1 * MiB}
        self.budgets = {d: b * MiB for d, b in (budgets or {}).items()}
        self.loads = []

    def read(self, device):
        return read_memory("cpu") if device == "cpu" else Memory(self.free[device], TOTAL)

    def pool(self, specs):
        devices = Devices(self.budgets, names=["cpu", "cuda:0", "cuda:1"], read_memory=self.read)
        return Pool(Registry(specs), devices, FootprintStore(None), reserve_bytes=0, wait_timeout_s=2)


class Loaded:
    def __init__(self, gpus, shares):
        self.gpus, self.device_shares = gpus, dict(shares)
        for d, n in shares.items():
            gpus.free[d] -= n

    def release(self):
        for d, n in self.device_shares.items():
            self.gpus.free[d] += n


def sam_spec(gpus, loader, run_mib=0, extra_on_1=0):
    """sam-vit-base as the engine sees it, its weights taken from the fake GPUs by the plan (a
    split's measured shares may differ from the plan's: `extra_on_1`)."""
    def load(device):
        gpus.loads.append(device)
        if isinstance(device, DeviceMap):
            return Loaded(gpus, {**device.shares, "cuda:1": device.shares["cuda:1"] + extra_on_1})
        return Loaded(gpus, {device: 375_000_000})

    return ModelSpec("sam-vit-base", "heavy", "torch", load, "test", estimate_bytes=375_000_000,
                     run_estimate_bytes=run_mib * MiB, split=loader.split, unloader=lambda m: m.release())


def plain_spec(gpus, name, mib, device):
    return ModelSpec(name, "heavy", "torch", lambda d: Loaded(gpus, {d: mib * MiB}), "test",
                     estimate_bytes=mib * MiB, device=device, unloader=lambda m: m.release())


def test_whole_on_the_gpu_with_room_split_when_only_both_have_it(vit_base):
    gpus = GPUs(300, 500)
    pool = gpus.pool([sam_spec(gpus, vit_base)])
    with pool.lease("sam-vit-base"):
        pass
    assert gpus.loads == ["cuda:1"] and not isinstance(gpus.loads[0], DeviceMap)
    assert pool.resident_bytes("cuda:1") == 375_000_000 and pool.resident_bytes("cuda:0") == 0

    gpus = GPUs(250, 250)
    pool = gpus.pool([sam_spec(gpus, vit_base, run_mib=10, extra_on_1=MiB)])
    with pool.lease("sam-vit-base") as model:
        (plan,) = gpus.loads
        assert isinstance(plan, DeviceMap) and plan.devices == ("cuda:0", "cuda:1")
        # The run peak is reserved on each GPU of the split, beside its share.
        assert all(pool.engine_bytes(d) == model.device_shares[d] + 10 * MiB for d in plan.devices)
    # Planned from rooms of 250 - 10 MiB each; accounted as measured after the load.
    assert all(plan.shares[d] <= 240 * MiB for d in plan.devices)
    assert {d: pool.resident_bytes(d) for d in plan.devices} == model.device_shares
    assert model.device_shares["cuda:1"] == plan.shares["cuda:1"] + MiB
    (row,) = pool.snapshot()
    assert row["device"] == "cuda:0+cuda:1" and row["shares"] == model.device_shares
    assert row["bytes"] == sum(model.device_shares.values())
    with pool.lease("sam-vit-base") as again:  # resident: the same split instance, no second load
        assert again is model and len(gpus.loads) == 1
    assert pool.unload("sam-vit-base") == 1 and gpus.free == {"cuda:0": 250 * MiB, "cuda:1": 250 * MiB}
    assert "from cuda:0+cuda:1: unloaded" in pool.eviction_log[-1]


def test_a_split_evicts_only_on_the_gpu_that_needs_the_room(vit_base):
    # Budgets of 300 MiB: sam-vit-base (358 MiB) never fits whole. cuda:0 has 270 MiB left beside
    # p0, cuda:1 60 beside p1: not enough for a plan, and evicting p0 (30) would not make it; p1 must go.
    gpus = GPUs(1000, 1000, budgets={"cuda:0": 300, "cuda:1": 300})
    pool = gpus.pool([sam_spec(gpus, vit_base), plain_spec(gpus, "p0", 30, "cuda:0"),
                      plain_spec(gpus, "p1", 240, "cuda:1")])
    for name in ("p0", "p1"):
        with pool.lease(name):
            pass
    assert vit_base.split({"cuda:0": 270 * MiB, "cuda:1": 60 * MiB}) is None
    assert vit_base.split({"cuda:0": 300 * MiB, "cuda:1": 60 * MiB}) is None
    with pool.lease("sam-vit-base"):
        pass
    (plan,) = gpus.loads
    assert pool.loaded_models() == {"sam-vit-base", "p0"}
    assert [n.split(" ")[0] for n in pool.eviction_log] == ["p1"]
    assert all(pool.engine_bytes(d) <= 300 * MiB for d in plan.devices)
    assert pool.resident_bytes("cuda:0") == plan.shares["cuda:0"] + 30 * MiB


def test_refused_at_once_when_not_even_both_gpus_together_could_hold_it(vit_base):
    gpus = GPUs(1000, 1000, budgets={"cuda:0": 150, "cuda:1": 150})
    pool = gpus.pool([sam_spec(gpus, vit_base)])
    with pytest.raises(NotEnoughMemory, match="more than any one GPU can take.*does not split over cuda:0, cuda:1"):
        with pool.lease("sam-vit-base"):
            pass
    assert gpus.loads == []


def test_a_split_waits_for_memory_other_processes_hold_and_a_pinned_device_never_splits(vit_base):
    gpus = GPUs(100, 100, budgets={"cuda:0": 300, "cuda:1": 300})   # the budgets allow a split; the GPUs are full
    pool = gpus.pool([sam_spec(gpus, vit_base)])
    with pytest.raises(NotEnoughMemory, match="cuda:0\\+cuda:1 came free within 1 s"):
        with pool.lease("sam-vit-base", timeout_s=1):
            pass
    assert gpus.loads == []
    pinned = Devices(names=["cpu", "cuda:0", "cuda:1"], default="cuda:1", read_memory=GPUs(250, 250).read)
    pool = Pool(Registry([sam_spec(gpus, vit_base)]), pinned, FootprintStore(None), reserve_bytes=0)
    assert pool.placement(pool.registry.get("sam-vit-base")) == "cuda:1"
