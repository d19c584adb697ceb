"""Parking (engine/parking.py): an evicted torch model on a GPU kept in host RAM and restored by a copy.

On this CPU machine the real Pool parks and restores over a GPU simulated by `SimGPU`: Parking's
own code (the host buffer, the tensor views, the module's move) with its CUDA primitives swapped
for CPU copies, so every move is a real copy of a real module's tensors. The tests marked gpu do
the real thing on CUDA (skipped without one)."""
import time

import pytest
import torch

from engine.devices import Devices, Memory
from engine.models import FootprintStore, ModelSpec, Registry
from engine.parking import NOT_ON_CPU, Parking
from engine.pool import Pool
from engine.runs import RunLog
from tiny_models import MiB, Block, block_loader, forward, save_block

GiB = 1024 * MiB
GPU = "cuda:0"


class SimGPU(Parking):
    """A GPU simulated on the CPU: a tensor is 'on cuda:0' unless it lives in a host buffer this
    mover parked it in; parking copies into that buffer, restoring copies out of it."""

    def __init__(self):
        self.host = {}  # data_ptr of each parked (pinned) host buffer -> its bytes
        self.copies_back = 0

    def _applies(self, device):
        return device == GPU

    def _on(self, tensor, device):
        return tensor.untyped_storage().data_ptr() not in self.host

    def _pin(self, buffer):
        self.host[buffer.data_ptr()] = buffer.numel()
        return True

    def _unpin(self, buffer):
        del self.host[buffer.data_ptr()]

    def _to_device(self, tensor, device):
        if self._on(tensor, device):
            return tensor  # a tied weight met a second time: moved already
        self.copies_back += 1
        return tensor.detach().clone()

    def _sync(self, device):
        pass


def gpu_spec(tmp_path, name, mib, loads, **kwargs):
    """A Block 'on cuda:0' (its tensors in this machine's RAM, which the simulated GPU is)."""
    load = block_loader(save_block(tmp_path, name, mib), mib, loads)
    return ModelSpec(name, "heavy", "torch", lambda device: load("cpu"), "test", estimate_bytes=mib * MiB,
                     device=GPU, **kwargs)


def cpu_spec(tmp_path, name, mib, loads):
    return ModelSpec(name, "heavy", "torch", block_loader(save_block(tmp_path, name, mib), mib, loads), "test",
                     estimate_bytes=mib * MiB, device="cpu")


def make_pool(specs, cpu_mib, gpu_mib, parking=None):
    """A pool over the CPU and one simulated GPU whose budgets alone decide (memory reads as plenty)."""
    devices = Devices({"cpu": cpu_mib * MiB, GPU: gpu_mib * MiB}, names=["cpu", GPU],
                      read_memory=lambda device: Memory(64 * GiB, 64 * GiB))
    return Pool(Registry(specs), devices, FootprintStore(None), reserve_bytes=0, wait_timeout_s=2,
                parking=parking or SimGPU())


def use(pool, name):
    with pool.lease(name) as model:
        return model, forward(model)


def lot_names(pool):
    return [p.name for p in pool.lot.parked]


def test_an_evicted_gpu_model_is_parked_then_restored_not_reloaded(tmp_path):
    loads, sim = [], SimGPU()
    pool = make_pool([gpu_spec(tmp_path, "a", 16, loads), gpu_spec(tmp_path, "b", 16, loads)], 100, 20, sim)
    model_a, before = use(pool, "a")
    use(pool, "b")   # the GPU holds one: a goes, parked
    assert pool.loaded_models() == {"b"} and lot_names(pool) == ["a"]
    (parked,) = pool.lot.parked
    # Its tensors now live in the one host buffer, 16 MiB and the layout's padding at most.
    assert 16 * MiB <= parked.bytes <= 16 * MiB + 512 * 8 and sim.host == {parked.buffer.data_ptr(): parked.bytes}
    assert all(t.untyped_storage().data_ptr() == parked.buffer.data_ptr() for t in model_a.parameters())
    assert pool.engine_bytes("cpu") == pool.resident_bytes("cpu") == parked.bytes
    assert pool.headroom("cpu") == 100 * MiB - parked.bytes
    row = next(r for r in pool.snapshot() if r["name"] == "a")
    assert row["state"] == "parked" and row["device"] == "cpu" and row["parked_from"] == GPU
    assert row["bytes"] == parked.bytes and row["backend"] == "pinned host RAM"
    assert pool.eviction_log[-1].endswith("room to load b; parked in pinned host RAM")

    runs = RunLog(None)
    record, token = runs.start("test")
    try:
        restored, after = use(pool, "a")   # b is parked in turn, a copied back
    finally:
        runs.finish(record, token)
    assert loads == ["a", "b"], "a parked model must come back without its loader"
    assert restored is model_a and torch.equal(after, before)
    assert sim.copies_back == len(list(model_a.parameters()))
    assert not any(t.untyped_storage().data_ptr() in sim.host for t in model_a.parameters())
    assert lot_names(pool) == ["b"] and parked.buffer is None and list(sim.host.values()) == [pool.lot.bytes()]
    (instance,) = [i for i in pool._instances if i.spec.name == "a"]
    assert instance.parked is parked and instance.load_s >= parked.restored_s > 0
    assert record.load_s == instance.load_s
    assert [s for s in record.steps if s.startswith("restored a from pinned host RAM in ")], record.steps
    assert pool.unload("b") == 1 and pool.lot.parked == [] and sim.host == {}   # unloading drops a parked copy


def test_parked_bytes_count_on_the_cpu_and_go_oldest_first_when_it_needs_room(tmp_path):
    loads = []
    specs = [gpu_spec(tmp_path, n, 16, loads) for n in "abcd"] + [cpu_spec(tmp_path, "x", 24, loads)]
    pool = make_pool(specs, 40, 20)
    for name in "abc":
        use(pool, name)
    assert lot_names(pool) == ["a", "b"] and pool.engine_bytes("cpu") == pool.lot.bytes() == 32 * MiB
    use(pool, "d")   # parking c needs 16 MiB of 40: a, the oldest, is dropped for it
    assert lot_names(pool) == ["b", "c"]
    assert pool.eviction_log[-2].startswith("a (parked, ") and pool.eviction_log[-2].endswith("room to park c")
    use(pool, "x")   # a CPU model needs 24 MiB: b goes, c stays
    assert lot_names(pool) == ["c"] and pool.loaded_models() == {"d", "x"}
    assert pool.eviction_log[-1].startswith("b (parked, ") and pool.eviction_log[-1].endswith("room to load x")
    assert pool.engine_bytes("cpu") <= 40 * MiB
    use(pool, "a")   # dropped: loaded from its file again; d is parked, c dropped for it (x stays)
    assert loads == ["a", "b", "c", "d", "x", "a"]
    assert lot_names(pool) == ["d"] and pool.eviction_log[-2].endswith("room to park d")
    assert pool.engine_bytes("cpu") == 40 * MiB and pool.loaded_models() == {"a", "x"}
    # CPU out of memory: the parked go first.
    assert pool.free_memory("cpu")[0] == "evicted d (parked), x" and pool.lot.parked == []


def test_never_parked_where_the_cpu_budget_cannot_hold_it_and_never_for_a_live_cpu_model(tmp_path):
    loads = []
    pool = make_pool([gpu_spec(tmp_path, "a", 16, loads), gpu_spec(tmp_path, "b", 16, loads),
                      cpu_spec(tmp_path, "x", 16, loads)], 30, 20)
    use(pool, "x")   # idle on the CPU: 14 MiB of its budget left, less than a's 16
    use(pool, "a")
    use(pool, "b")
    assert pool.lot.parked == [] and pool.loaded_models() == {"x", "b"}
    assert pool.eviction_log[-1].endswith("room to load b")   # evicted as before parking
    use(pool, "a")
    assert loads == ["x", "a", "b", "a"]
    pool = make_pool([gpu_spec(tmp_path, "a", 16, loads), gpu_spec(tmp_path, "b", 16, loads)], 12, 20)
    use(pool, "a"), use(pool, "b")
    assert pool.lot.parked == [] and pool.engine_bytes("cpu") == 0


class Session:
    """What an ONNX Runtime session shows of itself (runtimes/backend.py looks for the same)."""

    def get_providers(self):
        return ["CUDAExecutionProvider"]

    def run(self, *args):
        return []


def test_only_plain_torch_modules_on_cuda_are_parked(tmp_path):
    sim, block = SimGPU(), Block(1)
    spec = gpu_spec(tmp_path, "a", 1, [])
    assert sim.parkable(block, GPU, spec) is None
    assert sim.parkable(block, "cpu", spec) == NOT_ON_CPU and "nothing to copy back" in NOT_ON_CPU
    assert Parking().parkable(block, "cpu") == NOT_ON_CPU   # the real one, on this machine
    assert sim.parkable({"weights": torch.ones(3)}, GPU) == "not a torch module (dict)"
    assert sim.parkable(block, GPU, ModelSpec("o", "heavy", "onnxruntime", None, "t", 0, device=GPU)) == \
        "runs on onnxruntime"
    assert sim.parkable(block, GPU, ModelSpec("u", "heavy", "torch", None, "t", 0, device=GPU, unloader=print)) == \
        "its spec has an unloader"
    with_session = Block(1)
    with_session.layers[0].__dict__["session"] = Session()
    assert "runs through Session" in sim.parkable(with_session, GPU, spec)
    stray = Block(1)
    stray.layers[0].cache = torch.ones(2)
    assert "outside its parameters and buffers" in sim.parkable(stray, GPU, spec)
    block.parkable = False
    assert "opts out" in sim.parkable(block, GPU, spec)

    # In the pool, asked to park each: what is not a module, and a CPU model, are evicted as before.
    loads = []
    not_module = ModelSpec("n", "heavy", "torch", lambda d: {"w": torch.ones(4 * MiB)}, "t", 16 * MiB, device=GPU)
    pool = make_pool([not_module, gpu_spec(tmp_path, "b", 16, loads), cpu_spec(tmp_path, "x", 16, loads)], 100, 40)
    for name in ("n", "x", "b"):
        with pool.lease(name):
            pass
        assert pool.unload(name, park=True) == 1
    assert lot_names(pool) == ["b"] and pool.loaded_models() == set()
    assert [line.split(": ")[-1] for line in pool.eviction_log] == ["unloaded on request"] * 2 + [
        "unloaded on request; parked in pinned host RAM"]


def test_a_real_network_with_buffers_comes_back_exact(tmp_path):
    """MTCNN with its real weights (facenet-pytorch's wheel), eager: PReLU weights and the
    detections on a real photo are the same after parking and restoring."""
    from skimage import data

    from analysers.face_detector import detect_faces, load_mtcnn

    sim, image = SimGPU(), data.astronaut()
    model = load_mtcnn("cpu")
    tensors = {n: t.clone() for n, t in model.state_dict().items()}
    faces = detect_faces(model, image)
    assert len(faces) == 1
    assert sim.parkable(model, GPU) is None
    parked = sim.park("mtcnn", model, GPU)
    assert sim.host == {parked.buffer.data_ptr(): parked.bytes}
    assert detect_faces(model, image) == faces   # parked: runs from the host copy too
    assert sim.restore(parked) is model
    sim.release(parked)
    assert sim.host == {} and all(torch.equal(t, tensors[n]) for n, t in model.state_dict().items())
    assert detect_faces(model, image) == faces


# ---- on a real GPU

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_on_cuda_a_parked_model_frees_the_gpu_and_restores_exact_and_faster_than_its_loader(tmp_path):
    mib = 256
    path = save_block(tmp_path, "big", mib)
    loads = []
    load = block_loader(path, mib, loads)
    parking = Parking()
    x = torch.randn(8, 512, device=GPU)
    model = load(GPU)
    with torch.inference_mode():
        before = model(x)
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated(GPU)
    parked = parking.park("big", model, GPU)
    assert parked.pinned and all(t.is_pinned() for t in model.parameters())
    assert allocated - torch.cuda.memory_allocated(GPU) >= mib * MiB - MiB   # the GPU copy is gone
    started = time.perf_counter()
    assert parking.restore(parked) is model
    restore_s = time.perf_counter() - started
    parking.release(parked)
    with torch.inference_mode():
        assert torch.equal(model(x), before)
    del model
    torch.cuda.empty_cache()
    started = time.perf_counter()
    load(GPU)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - started
    assert restore_s < load_s, (restore_s, load_s)


@pytest.mark.gpu
@cuda
def test_on_cuda_the_pool_parks_and_restores_without_the_loader(tmp_path):
    from engine import Engine

    loads = []
    specs = [ModelSpec(n, "heavy", "torch", block_loader(save_block(tmp_path, n, 64), 64, loads), "t",
                       estimate_bytes=64 * MiB, device="auto") for n in ("a", "b")]
    engine = Engine(tmp_path / "data", budget="cuda:0=100MiB", reserve=0, wait_timeout_s=30, specs=specs)
    x = torch.ones(4, 512, device=GPU)
    fn = lambda model: model(x).sum().item()  # noqa: E731
    first = engine.infer("t", "a", fn)
    engine.infer("t", "b", fn)
    assert [p.name for p in engine.pool.lot.parked] == ["a"]
    assert engine.infer("t", "a", fn) == first and loads == ["a", "b"]
    record = engine.runs.latest(1)[0]
    assert any(s.startswith("restored a from pinned host RAM") for s in record.steps)
    assert engine.pool.unload("a") == 1 and engine.pool.unload("b") == 1 and engine.pool.lot.parked == []
