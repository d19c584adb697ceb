"""bench/networks.py: one cheap spec through the scenario (its own child process), and a spec
without a standard input still listed with load and footprint."""
from __future__ import annotations

import pytest

from bench import networks
from tabs.catalog import default_specs
from tabs.language import model as language

CHEAP = language.LANGUAGE_MODEL   # fastText lid.176: loads in well under a second


@pytest.fixture(scope="module")
def available():
    if language.unavailable_reason():
        pytest.fail(f"{CHEAP} is not installed: {language.unavailable_reason()} (run ./setup.sh)")


def test_one_spec_in_a_child_process(available, monkeypatch):
    monkeypatch.setenv("WIMMEL_BENCH_ONLY", CHEAP)
    result = networks.run(verbose=False)
    specs = default_specs()
    assert result["scenario"] == "networks"
    assert result["specs"] == len(specs) and result["networks_counted"] == sum(s.networks for s in specs)
    assert list(result["networks"]) == [CHEAP]
    row = result["networks"][CHEAP]
    assert "error" not in row, row
    assert row["function"] == "language of a text" and row["input"] == "sentence" and row["call"] == "detect"
    assert 0 < row["load_s"] < 10 and 0 < row["cold_load_s"] < 30
    assert row["footprint_mib"] > 1           # the model's weights, not an empty accounting
    assert 0 < row["latency_ms"] < 1000
    assert row["run_peak_mib"] >= 0          # measured by the engine over the latency calls
    # The child's own process: its peak covers the imports before the load, and the load itself.
    assert 100 < row["base_rss_mib"] <= row["peak_rss_mib"]
    assert "speech_s" not in result          # no speech rendered when no chosen spec needs it


def test_spec_without_standard_input_is_listed(available):
    row = networks.measure(CHEAP, standard={})
    assert row["input"] == networks.NO_INPUT and row["latency_ms"] is None and "run_peak_mib" not in row
    assert row["footprint_mib"] > 1 and row["load_s"] > 0
    fields = {"specs": 1, "networks_counted": 1,
              "networks": {CHEAP: {**row, "function": "language of a text", "runtime": "torch"},
                           "broken": {"function": "x", "error": "FileNotFoundError: weights"}}}
    lines = networks.render(fields)
    mine = next(line for line in lines if line.startswith(f"| {CHEAP} |"))
    assert networks.NO_INPUT in mine and f"| {row['footprint_mib']} |" in mine
    assert any(line.startswith("| broken |") and "**failed**" in line for line in lines)
    assert lines[2].count("|") == len(networks.COLUMNS) + 1
