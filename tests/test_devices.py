import pytest

from engine.devices import Devices, format_bytes, parse_budget, parse_size, read_memory


def test_parse_size_units():
    assert parse_size("6GiB") == 6 * 1024**3
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("1024") == 1024
    with pytest.raises(ValueError, match="not a memory size"):
        parse_size("lots")


def test_parse_budget():
    assert parse_budget("cpu=6GiB,cuda:0=10GiB") == {"cpu": 6 * 1024**3, "cuda:0": 10 * 1024**3}
    assert parse_budget("cuda=1GiB") == {"cuda:0": 1024**3}
    assert parse_budget("") == {}
    with pytest.raises(ValueError, match="DEVICE=SIZE"):
        parse_budget("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        parse_budget("tpu=1GiB")


def test_cpu_memory_is_the_whole_machine():
    memory = read_memory("cpu")
    assert 0 < memory.free <= memory.total
    assert memory.used == memory.total - memory.free


def test_devices_budget_defaults_to_total_and_rejects_absent_devices():
    devices = Devices({"cpu": 1024**3})
    assert devices.names[0] == "cpu"
    assert devices.budget("cpu") == 1024**3
    assert devices.place("cpu") == "cpu"
    assert devices.place("auto") == devices.default
    if "cuda:7" not in devices.names:
        with pytest.raises(ValueError, match="not here"):
            Devices({"cuda:7": 1024**3})


def test_format_bytes():
    assert format_bytes(3 * 1024**3) == "3.00 GiB"
    assert format_bytes(1536 * 1024) == "1.50 MiB"
    assert format_bytes(None) == "-"


# ---- placement over several GPUs, on this CPU machine: fake device names and memory readings,
# the real Pool and Engine otherwise.

from engine import Engine, ModelSpec  # noqa: E402
from engine.devices import GiB, Memory  # noqa: E402
from engine.models import FootprintStore, Registry  # noqa: E402
from engine.pool import Pool  # noqa: E402


class Weights:
    """A model 'loaded' onto a fake GPU: its bytes are taken from that GPU's free memory."""

    def __init__(self, gpus, device, size):
        self.gpus, self.device, self.size = gpus, device, size
        gpus.free[device] -= size

    def release(self):
        self.gpus.free[self.device] += self.size


class FakeGPUs:
    TOTAL = 40 * GiB

    def __init__(self, **free_gib):
        self.free = {name.replace("_", ":"): gib * GiB for name, gib in free_gib.items()}
        self.loaded_on: dict[str, str] = {}

    def read(self, device):
        return read_memory("cpu") if device == "cpu" else Memory(self.free[device], self.TOTAL)

    def devices(self, budgets=None, default="auto"):
        return Devices(budgets, default, names=["cpu", *self.free], read_memory=self.read)

    def spec(self, name, gib, device="auto"):
        def load(on):
            self.loaded_on[name] = on
            return Weights(self, on, gib * GiB) if on != "cpu" else bytearray(16)

        return ModelSpec(name=name, role="heavy", runtime="torch", loader=load, source="test",
                         estimate_bytes=gib * GiB, device=device, unloader=lambda w: w.release())


def make_pool(gpus, specs, budgets=None, default="auto"):
    return Pool(Registry(specs), gpus.devices(budgets, default), FootprintStore(None), reserve_bytes=0,
                wait_timeout_s=5)


def load_all(pool, names):
    for name in names:
        with pool.lease(name):
            pass


def test_auto_spreads_models_to_the_gpu_with_the_most_room_and_cpu_models_stay():
    gpus = FakeGPUs(cuda_0=10, cuda_1=24)
    pool = make_pool(gpus, [gpus.spec(n, 6) for n in "abcd"] + [gpus.spec("on-cpu", 1, device="cpu")])
    load_all(pool, ["a", "b", "c", "on-cpu"])
    # 24 -> 18 -> 12 free on cuda:1, each more than cuda:0's 10; then 6 < 10.
    assert [gpus.loaded_on[n] for n in "abc"] == ["cuda:1"] * 3
    assert gpus.free == {"cuda:0": 10 * GiB, "cuda:1": 6 * GiB}
    load_all(pool, ["d"])
    assert gpus.loaded_on["d"] == "cuda:0" and gpus.free["cuda:0"] == 4 * GiB
    assert gpus.loaded_on["on-cpu"] == "cpu"
    rows = {r["name"]: r["device"] for r in pool.snapshot()}
    assert rows == {"a": "cuda:1", "b": "cuda:1", "c": "cuda:1", "d": "cuda:0", "on-cpu": "cpu"}
    # A resident model is served where it lives, even where another GPU has more room now.
    load_all(pool, ["a"])
    assert gpus.loaded_on["a"] == "cuda:1" and gpus.free["cuda:1"] == 6 * GiB


def test_memory_taken_by_other_processes_and_the_budget_both_count():
    gpus = FakeGPUs(cuda_0=12, cuda_1=30)
    # cuda:1 has the most free memory, but the engine may hold only 8 GiB there.
    pool = make_pool(gpus, [gpus.spec(n, 5) for n in "abc"], budgets={"cuda:1": 8 * GiB})
    load_all(pool, ["a"])
    assert gpus.loaded_on["a"] == "cuda:0"   # min(30, 8) < min(12, 40)
    gpus.free["cuda:0"] -= 6 * GiB            # another process takes 6 GiB there: 1 GiB left
    load_all(pool, ["b"])
    assert gpus.loaded_on["b"] == "cuda:1"   # 8 - 0 held > 1 free
    load_all(pool, ["c"])                     # 1 free on cuda:0, 8 - 5 held on cuda:1
    assert gpus.loaded_on["c"] == "cuda:1"   # b (idle, heavy) is evicted for room there
    assert "b" not in pool.loaded_models() and pool.eviction_log[-1].startswith("b (heavy")


def test_a_pinned_default_device_and_one_gpu_keep_the_old_placement():
    gpus = FakeGPUs(cuda_0=30, cuda_1=8)
    pinned = gpus.devices(default="cuda:1")
    assert pinned.pinned and pinned.place("auto") == "cuda:1" and pinned.place("cpu") == "cpu"
    pool = make_pool(gpus, [gpus.spec("a", 2)], default="cuda:1")
    load_all(pool, ["a"])
    assert gpus.loaded_on["a"] == "cuda:1"
    spread = gpus.devices()
    assert not spread.pinned and spread.default == "cuda:0" and spread.place("auto") == "cuda:0"
    assert spread.place("cuda:1") == "cuda:1" and spread.place("cuda:5") == "cpu"
    one = FakeGPUs(cuda_0=1).devices()
    assert one.place("auto", room=lambda d: 1 / 0) == "cuda:0"   # nothing to choose: nothing read
    cpu_only = Devices(names=["cpu"])
    assert cpu_only.place("auto") == "cpu" and cpu_only.gpus == []


def test_the_engine_records_the_chosen_gpu_and_passes_it_to_the_loader(tmp_path):
    gpus = FakeGPUs(cuda_0=5, cuda_1=9)
    engine = Engine(tmp_path / "data", reserve=0, specs=[gpus.spec("a", 2)])
    engine.devices = engine.pool.devices = gpus.devices()
    # Run.call would measure peaks on the device through torch.cuda (engine/measure.py), which a
    # CPU torch lacks: the lease inside a run is what records the device.
    with engine.run("test"):
        with engine.pool.lease("a") as weights:
            assert weights.device == "cuda:1"
    record = engine.runs.latest(1)[0]
    assert record.device == "cuda:1" and record.models == ["a"] and gpus.loaded_on["a"] == "cuda:1"
    (row,) = engine.status()["models"]
    assert (row["device"], row["runtime"], row["runtime_reason"]) == ("cuda:1", "torch", "")


def test_the_system_tab_shows_each_runtime_and_why_only_for_the_others():
    from app.system_tab import model_rows

    why = "CTranslate2 has CUDA"
    rows = [{"name": n, "role": "interactive", "runtime": rt, "runtime_reason": reason, "device": "cpu",
             "backend": "", "state": "not loaded", "bytes": 1024, "measured": False, "load_s": None, "uses": 0}
            for n, rt, reason in (("w", "ctranslate2", why), ("t", "torch", "stale note"), ("o", "onnxruntime", ""))]
    table = model_rows({"models": rows})
    assert list(table.columns[:6]) == ["model", "function", "networks", "role", "runtime", "why this runtime"]
    assert table["runtime"].tolist() == ["ctranslate2", "torch", "onnxruntime"]
    assert table["why this runtime"].tolist() == [why, "", ""]


def test_every_onnx_runtime_model_goes_to_the_gpu_where_there_is_one_and_the_readme_lists_each():
    from pathlib import Path

    from app import models_table
    from tabs.catalog import default_specs

    rows = models_table.rows()   # the specs as a machine with a working GPU builds them
    assert sorted(r["model"] for r in rows) == sorted(s.name for s in default_specs())
    onnx = [r["model"] for r in rows if r["runtime"] == "onnxruntime"]
    assert len(onnx) >= 8 and [r["model"] for r in rows if r["model"] in onnx and r["device with a GPU"] != "GPU"] == []
    assert {r["model"]: r["device with a GPU"] for r in rows}["whisper-tiny-en"] == "GPU"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert [r["model"] for r in rows if f"\n| {r['model']} | " not in readme] == []
    assert models_table.markdown(rows).splitlines()[2] == "| " + " | ".join(models_table.COLUMNS) + " |"
    # The README's table is the registry's, whole (regenerate it with python -m app.models_table).
    assert models_table.markdown(rows).strip() in readme


def test_system_status_names_every_networks_capability_source_and_that_it_is_offline(tmp_path):
    from app.system_tab import model_rows, system_status
    from tabs.catalog import build_engine

    engine = build_engine(data_dir=tmp_path, store=False)
    status = system_status(engine)
    rows = status["models"]
    assert status["networks"] >= 40 and sum(r["networks"] for r in rows) == status["networks"]
    assert len({r["function"] for r in rows}) == len(rows)   # one network per function
    assert all(r["offline"] and r["capability"] != "Models tab" and r["source"] for r in rows), rows
    named = {r["name"]: r["capability"] for r in rows}
    assert named["face-detector"] == "shared (face_detector)" and named["basic-pitch"] == "Audio: Notes (audio to MIDI)"
    table = model_rows(status)
    assert list(table.columns[-3:]) == ["capability", "weights from", "offline"]
    assert set(table["offline"]) == {"yes, installed"}
