"""The engine on a real CUDA device: whole-device memory, leases, unloading and real CUDA OOM.

These need a GPU; on a machine without one they are skipped (and reported as skipped)."""
import pytest
import torch

from engine import Engine, OutOfMemory
from engine.devices import Devices, read_memory
from tiny_models import MiB, block_spec, forward

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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
