"""Pitch through a real engine and the swift-f0 wheel's ONNX model."""
import json
from pathlib import Path

import numpy as np
import pytest
from app_calls import wired

import tabs.pitch as capability
from capability_engine import capability_engine
from engine import UserFacingError
from engine.media.audio import MediaError, write_wav
from tabs.pitch import model as pz
from tabs.pitch import tab

RATE = 16000


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("pitch"),
                           capability.specs(), capability.job_kinds(), job_threads=1) as engine:
        yield engine


def tone(hz, seconds=2.0, rate=RATE, harmonics=1):
    t = np.arange(int(seconds * rate)) / rate
    return sum(0.3 / k * np.sin(2 * np.pi * hz * k * t) for k in range(1, harmonics + 1)).astype(np.float32)


def test_the_weights_are_here():
    assert pz.unavailable_reason() is None and capability.unavailable() is None


@pytest.mark.gpu
def test_the_detector_runs_where_onnx_runtime_really_runs():
    from engine.runtimes import onnx_runtime

    (spec,) = pz.specs()
    assert spec.device == onnx_runtime.spec_device()
    cpu = pz.load("cpu")
    assert cpu.session.get_providers() == [onnx_runtime.CPU]
    if not onnx_runtime.cuda_works():   # this machine: asking for a GPU says why there is none
        with pytest.raises(RuntimeError, match="no CUDA provider of onnxruntime loads here"):
            pz.load("cuda:0")
        return
    gpu = pz.load("cuda:0")
    assert gpu.session.get_providers()[0] == onnx_runtime.CUDA
    samples = tone(220.0)
    on_gpu, on_cpu = gpu.detect(samples, RATE), cpu.detect(samples, RATE)
    np.testing.assert_allclose(on_gpu.pitch_hz, on_cpu.pitch_hz, rtol=1e-3)
    np.testing.assert_allclose(on_gpu.confidence, on_cpu.confidence, atol=1e-3)


@pytest.mark.parametrize("hz, note", [(220.0, "A3"), (440.0, "A4")])
def test_a_pure_tone_gives_its_pitch_and_note(call, hz, note):
    result = pz.pitch(call, tone(hz), RATE)
    assert abs(result["median_hz"] - hz) < 2
    assert result["median_note"] == note
    assert result["voiced_s"] > 1.0
    times = [t for t, _ in result["f0"]]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= 2.0
    assert all(abs(f - hz) < 5 for _, f in result["f0"])
    assert [n["note"] for n in result["notes"]] == [note]


def test_other_rates_and_stereo_are_resampled(call):
    result = pz.pitch(call, tone(440.0, rate=44100), 44100)
    assert abs(result["median_hz"] - 440) < 2
    stereo = np.stack([tone(440.0), tone(440.0)], axis=1)
    assert abs(pz.pitch(call, stereo, RATE)["median_hz"] - 440) < 2


def test_a_melody_gives_its_held_notes(call):
    # Harmonic tones, as a voice or an instrument has: C4, E4, G4, each half a second.
    melody = np.concatenate([tone(hz, 0.5, harmonics=4) for hz in (261.63, 329.63, 392.0)])
    result = pz.pitch(call, melody, RATE)
    assert [n["note"] for n in result["notes"]] == ["C4", "E4", "G4"]
    for note, start in zip(result["notes"], (0.0, 0.5, 1.0)):
        assert abs(note["start"] - start) < 0.1
    assert result["median_note"] == "E4"


def test_low_pure_tones_need_a_lower_voicing_threshold(call):
    # The model scores a pure 150 Hz sine ~0.45: unvoiced at its calibrated 0.5, right at 0.4.
    assert pz.pitch(call, tone(150.0), RATE)["median_hz"] is None
    assert abs(pz.pitch(call, tone(150.0), RATE, voicing=0.4)["median_hz"] - 150) < 2


def test_silence_and_noise_have_no_pitch(call):
    silent = pz.pitch(call, np.zeros(RATE * 2, np.float32), RATE)
    assert silent == {"median_hz": None, "median_note": None, "voiced_s": 0.0, "f0": [], "notes": []}
    noise = (0.1 * np.random.default_rng(0).standard_normal(RATE * 2)).astype(np.float32)
    assert pz.pitch(call, noise, RATE)["voiced_s"] < 0.1


def test_the_tab_answers_a_short_file_at_once(engine, tmp_path):
    path = write_wav(tmp_path / "a4.wav", tone(440.0), RATE)
    curve, result = wired(engine, tab.pitch, "track the pitch")(str(path))
    assert result["median_note"] == "A4" and len(curve) == len(result["f0"]) > 0
    assert list(curve.columns) == ["time (s)", "pitch (Hz)"]


def test_note_names():
    assert pz.note_name(220) == "A3" and pz.note_name(261.63) == "C4" and pz.note_name(466.16) == "A#4"
    assert pz.note_name(None) is None and pz.note_name(0) is None


def test_bad_input_says_what_is_wrong(engine, call, tmp_path):
    with pytest.raises(UserFacingError, match="empty"):
        capability.check({"sr": RATE}, {"audio": np.zeros(0, np.float32)})
    with pytest.raises(UserFacingError, match="voicing"):
        capability.check({"voicing": 1.0, "sr": RATE}, {"audio": tone(220)})
    with pytest.raises(UserFacingError, match="whole number"):
        capability.check({"sr": 16000.5}, {"audio": tone(220)})
    text = tmp_path / "song.mp3"
    text.write_text("la la la " * 100)
    with pytest.raises(UserFacingError, match="not audio"):
        tab.pitch(engine, str(text))
    with pytest.raises(UserFacingError, match="voicing"):
        tab.pitch(engine, str(text), voicing=0.0)
    long = write_wav(tmp_path / "long.wav", np.zeros(RATE * 62, np.float32), RATE)
    with pytest.raises(MediaError, match="too long"):
        pz.pitch_file(call, long)


def test_a_long_file_runs_as_a_job_with_the_frames_of_one_pass(engine, call, tmp_path):
    # 75 s (two 60 s chunks): a glide from 110 to 880 Hz, so the chunk edge has a pitch.
    seconds = 75
    t = np.arange(seconds * RATE) / RATE
    hz = 110 * 2 ** (3 * t / seconds)
    phase = 2 * np.pi * np.cumsum(hz) / RATE
    glide = sum(0.3 / k * np.sin(k * phase) for k in range(1, 4)).astype(np.float32)
    path = write_wav(tmp_path / "glide.wav", glide, RATE)
    job = list(engine.jobs.follow(engine.jobs.submit("pitch_long", {}, inputs={"audio": path})))[-1]
    assert job["state"] == "done", job["error"]
    result = json.loads(Path(job["result"]).read_text())
    direct = pz.pitch_file(call, path, max_seconds=None)
    assert len(result["f0"]) == len(direct["f0"]) > 0.9 * seconds / 0.016
    np.testing.assert_allclose(np.array(result["f0"]), np.array(direct["f0"]), atol=0.02)
    assert result["median_hz"] == pytest.approx(direct["median_hz"], abs=0.02)
    assert 300 < result["median_hz"] < 330  # the glide's middle: 110 * 2 ** 1.5 = 311 Hz
    # The tab sends it to the queue too, and answers with the job's result.
    _, via_tab = wired(engine, tab.pitch, "track the pitch")(str(path))
    assert via_tab == result
