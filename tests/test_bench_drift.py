"""bench/drift.py: the child on two small real models for 20 runs, and its line fit on its own
numbers. No timing is asserted."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from bench import drift
from bench.common import child_json

MODELS = ["fasttext-lid176", "face-embedder"]   # a sentence model and a photo model, both small
RUNS = 20


def test_fit_recovers_a_line_and_its_noise_free_slope():
    slope, intercept = drift.fit([3.0 + 2.5 * i for i in range(30)])
    assert slope == pytest.approx(2.5) and intercept == pytest.approx(3.0)
    noisy = [1.0, 3.0, 2.0, 5.0, 4.0]
    assert drift.fit(noisy)[0] == pytest.approx(np.polyfit(range(5), noisy, 1)[0])


def test_warm_index_is_the_run_that_completes_the_second_visit():
    assert drift.warm_index(["a", "b", "a", "c", "b", "b", "c", "a"]) == 6
    order = drift.make_order(["a", "b", "c"], 10, seed=1)
    assert len(order) == 10 and sorted(order[:3]) == sorted(order[3:6]) == ["a", "b", "c"]
    assert drift.warm_index(order) == 5   # two shuffled rounds


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drift")
    learned = child_json("bench.drift", "learn", str(folder / "learn"), ",".join(MODELS))
    assert learned["models"] == sorted(MODELS)
    out = {}
    for variant in ("evicting", "resident"):
        shutil.copytree(folder / "learn" / "data", folder / variant / "data")
        out[variant] = child_json("bench.drift", "child", str(folder / variant), variant, str(RUNS), ",".join(MODELS))
    return out


def test_child_reports_every_field_from_its_own_samples(variants):
    for variant, fields in variants.items():
        series = fields["series"]
        assert fields["runs"] == RUNS and len(series["rss_mb"]) == len(series["ledger_mb"]) == RUNS
        assert sorted(set(series["order"])) == sorted(MODELS)
        assert [series["order"].count(m) for m in MODELS] == [RUNS // 2] * 2
        warm = fields["warm_from"]
        assert warm == drift.warm_index(series["order"]) == 3 and fields["warm_runs"] == RUNS - 1 - warm
        # The slope is the least-squares one over the warm samples (the series is rounded to 0.1 MiB).
        for key in ("rss", "heap"):
            part = series[f"{key}_mb"][warm:]
            slope = np.polyfit(range(len(part)), part, 1)[0]
            assert fields[f"{key}_slope_mb_per_100"] == pytest.approx(slope * 100, abs=1.0)
            assert fields[f"{key}_growth_mb"] == pytest.approx(slope * (len(part) - 1), abs=0.2)
            assert fields[f"{key}_drift_pct"] == pytest.approx(
                100 * fields[f"{key}_growth_mb"] / fields["budget_mb"], abs=0.5)
            assert fields[f"{key}_warm_mb"] == part[0] and fields[f"{key}_end_mb"] == part[-1]
        nonheap = [r - h for r, h in zip(series["rss_mb"], series["heap_mb"])][warm:]
        fitted = np.polyfit(range(len(nonheap)), nonheap, 1)
        assert fields["nonheap_slope_mb_per_100"] == pytest.approx(fitted[0] * 100, abs=1.5)
        residual = np.asarray(nonheap) - np.polyval(fitted, range(len(nonheap)))
        se = np.sqrt(residual @ residual / (len(nonheap) - 2) / np.sum((np.arange(len(nonheap)) - (len(nonheap) - 1) / 2) ** 2))
        assert fields["nonheap_slope_se_mb_per_100"] == pytest.approx(se * 100, abs=1.5)
        assert fields["rss_max_above_start_mb"] == pytest.approx(max(series["rss_mb"]) - fields["start_rss_mb"], abs=0.3)
        gaps = [r - fields["start_rss_mb"] - held for r, held in zip(series["rss_mb"], series["ledger_mb"])]
        assert fields["gap_max_mb"] == pytest.approx(max(gaps), abs=0.3)
        assert fields["gap_median_mb"] == pytest.approx(float(np.median(gaps)), abs=0.3)
        assert set(fields["per_model_rss_delta_mb"]) == set(MODELS)
        first = {m: series["order"].index(m) for m in MODELS}
        for model, i in first.items():
            before = (series["rss_mb"][i - 1], series["ledger_mb"][i - 1]) if i else (fields["start_rss_mb"], 0)
            kept = (series["rss_mb"][i] - before[0]) - (series["ledger_mb"][i] - before[1])
            assert fields["unledgered_first_run_mb"][model] == pytest.approx(kept, abs=0.3)
        # RSS is its anonymous and file-backed parts (shared memory aside, a few MiB at most).
        assert all(abs(r - a - f) < 16 for r, a, f in zip(series["rss_mb"], series["anon_mb"], series["file_mb"]))


def test_the_floor_is_read_with_every_model_unloaded_after_each_round_of_the_evicting_variant(variants):
    evicting, resident = variants["evicting"], variants["resident"]
    assert "floor_mb" not in resident   # it keeps every model: nothing to unload
    warm = evicting["warm_from"]
    ends = [i for i in range(RUNS) if (i + 1) % len(MODELS) == 0 and i >= warm]   # 3, 5, .., 19
    floors = evicting["floor_mb"]
    assert len(floors) == len(ends) == 9
    # Nothing loaded: below the RSS sampled after the same run with its model still loaded.
    assert all(f <= evicting["series"]["rss_mb"][i] + 1 for f, i in zip(floors, ends))
    slope = np.polyfit(ends, floors, 1)[0]
    assert evicting["floor_growth_mb"] == pytest.approx(slope * (RUNS - 1 - warm), abs=0.3)
    # Both sides rounded (growth to 0.1 MiB) over a budget of a few MiB: a tolerance to match.
    assert evicting["floor_drift_pct"] == pytest.approx(100 * evicting["floor_growth_mb"] / evicting["budget_mb"],
                                                        abs=100 * 0.06 / evicting["budget_mb"] + 0.01)


def test_budget_below_the_sum_reloads_and_above_it_keeps_both(variants):
    evicting, resident = variants["evicting"], variants["resident"]
    load, peak = evicting["series"]["load_mb"], evicting["series"]["run_peak_mb"]
    expected = max(0.6 * sum(load.values()), max(load[m] + peak[m] for m in MODELS))
    assert evicting["budget_mb"] == pytest.approx(expected, abs=0.3)
    load, peak = resident["series"]["load_mb"], resident["series"]["run_peak_mb"]
    assert resident["budget_mb"] == pytest.approx(sum(load.values()) + sum(peak.values()) + 1024, abs=0.3)
    assert evicting["budget_mb"] < sum(evicting["series"]["load_mb"].values())   # both cannot stay
    assert resident["loads"] == len(MODELS)        # each loaded once, then resident
    assert evicting["loads"] > RUNS // 2           # 60 % of the two cannot hold both: reloads
    assert max(resident["series"]["ledger_mb"]) <= resident["budget_mb"]
