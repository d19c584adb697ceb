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
