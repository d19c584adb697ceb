"""Notes (audio to MIDI) through a real engine and the basic-pitch wheel's nmp.onnx, on real music."""
import json
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from app_calls import wired

import tabs.notes as capability
import tabs.pitch as pitch_capability
from capability_engine import capability_engine
from engine import UserFacingError
from engine.media.audio import MediaError, read_audio, write_wav
from tabs.notes import decode, tab
from tabs.notes import model as nm
from tabs.pitch import model as pz

AUDIO = Path(sys.prefix) / "lib/python3.11/site-packages/gradio/media_assets/audio"
SAX, CANTINA = AUDIO / "sax.wav", AUDIO / "cantina.wav"
RATE = nm.SAMPLE_RATE


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("notes"), capability.specs() + pitch_capability.specs(),
                           capability.job_kinds(), job_threads=1) as engine:
        yield engine


def tone(hz, seconds=2.0):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def read_midi(data: bytes):
    """A reader written apart from the writer: (tempo in us a beat, ticks a beat, notes [(start s,
    end s, pitch, velocity)], bends [(tick, value)], programs)."""
    assert data[:4] == b"MThd"
    _, fmt, tracks, division = struct.unpack(">IHHH", data[4:14])
    assert fmt == 1 and tracks == 2
    pos, tempo, events = 14, None, []
    for _ in range(tracks):
        assert data[pos:pos + 4] == b"MTrk"
        end = pos + 8 + struct.unpack(">I", data[pos + 4:pos + 8])[0]
        pos, tick = pos + 8, 0
        while pos < end:
            delta = 0
            while True:
                byte = data[pos]
                pos += 1
                delta = (delta << 7) | (byte & 0x7F)
                if byte < 0x80:
                    break
            tick += delta
            status = data[pos]
            if status == 0xFF:
                kind, size = data[pos + 1], data[pos + 2]
                if kind == 0x51:
                    tempo = int.from_bytes(data[pos + 3:pos + 6], "big")
                pos += 3 + size
            else:
                size = 2 if status >> 4 == 0xC else 3
                events.append((tick, data[pos:pos + size]))
                pos += size
    seconds = tempo / 1e6 / division
    notes, sounding, bends, programs = [], {}, [], []
    for tick, message in events:
        kind = message[0] >> 4
        if kind == 0x9 and message[2] > 0:
            sounding[message[1]] = (tick, message[2])
        elif kind in (0x8, 0x9):
            start, velocity = sounding.pop(message[1])
            notes.append((start * seconds, tick * seconds, message[1], velocity))
        elif kind == 0xE:
            bends.append((tick, message[1] | message[2] << 7))
        elif kind == 0xC:
            programs.append(message[1])
    return tempo, division, sorted(notes), bends, programs


def test_the_weights_are_here():
    assert nm.unavailable_reason() is None and capability.unavailable() is None
    (spec,) = capability.specs()
    assert spec.function == "music transcription (notes, polyphonic)" and spec.networks == 1


@pytest.mark.gpu
def test_the_network_runs_where_onnx_runtime_really_runs():
    from engine.runtimes import onnx_runtime

    (spec,) = nm.specs()
    assert spec.device == onnx_runtime.spec_device()
    cpu = nm.load("cpu")
    assert cpu.get_providers() == [onnx_runtime.CPU]
    if not onnx_runtime.cuda_works():
        with pytest.raises(RuntimeError, match="no CUDA provider of onnxruntime loads here"):
            nm.load("cuda:0")
        return
    gpu = nm.load("cuda:0")
    assert gpu.get_providers()[0] == onnx_runtime.CUDA
    samples = read_audio(CANTINA, RATE)
    for a, b in zip(nm.activations(gpu, samples, 0, 0, 3), nm.activations(cpu, samples, 0, 0, 3)):
        np.testing.assert_allclose(a, b, atol=2e-3)


def test_our_windows_and_note_creation_are_the_packages(monkeypatch):
    # The package's own inference and note creation as the reference. Its modules import
    # pretty_midi, mir_eval and resampy (not installed) for MIDI writing and sonification only.
    for name in ("mir_eval", "resampy", "pretty_midi"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["pretty_midi"].PrettyMIDI = object
    for name in ("basic_pitch.note_creation", "basic_pitch.inference"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import librosa
    from basic_pitch import inference, note_creation

    session = nm.load("cpu")
    for path, count in ((SAX, 57), (CANTINA, 26)):
        theirs = inference.run_inference(path, inference.Model(str(nm.model_path())))
        # Where the two window grids coincide (the first window), the frames are the same.
        ours = nm.activations(session, librosa.load(path, sr=RATE)[0], 0, 0, 1)
        for key, mine in zip(("note", "onset", "contour"), ours):
            np.testing.assert_allclose(mine, theirs[key][:nm.KEEP], atol=1e-5)
        # On the same outputs, the same notes, amplitudes and bends.
        expected = note_creation.get_pitch_bends(theirs["contour"], note_creation.output_to_notes_polyphonic(
            theirs["note"].copy(), theirs["onset"].copy(), 0.5, 0.3, 11, True, None, None, True))
        found = decode.pitch_bends(theirs["contour"], decode.note_events(theirs["note"], theirs["onset"]))
        assert len(found) == count
        assert sorted(found) == sorted((s, e, p, float(a), [int(x) for x in b]) for s, e, p, a, b in expected)


def test_the_sax_melody_agrees_with_the_pitch_tracker(call):
    # sax.wav: a saxophone playing scales. Of the frames swift-f0 (tabs/pitch) finds voiced,
    # measured: 95.7 % lie in a transcribed note, 94.5 % in one within a semitone of the F0.
    result = nm.transcribe_file(call, SAX)
    f0 = pz.pitch_file(call, SAX)["f0"]
    assert len(f0) > 800 and len(result["notes"]) == 60
    near = 0
    for t, hz in f0:
        played = [n["pitch"] for n in result["notes"] if n["start"] <= t < n["end"]]
        near += min((abs(69 + 12 * np.log2(hz / 440) - p) for p in played), default=99) <= 1.0
    assert near / len(f0) > 0.92
    assert {n["note"] for n in result["notes"][:10]} >= {"G3", "A3", "B3", "C4", "D4", "E4", "F#4", "G4"}


def test_cantina_gives_plausible_notes_and_a_midi_file_that_parses_back(engine):
    table, midi, roll, result = wired(engine, tab.transcribe_notes, "transcribe the notes")(str(CANTINA))
    notes = result["notes"]
    assert 20 <= len(notes) <= 30 and result["duration_s"] == pytest.approx(3.0, abs=0.01)
    assert 36 <= min(n["pitch"] for n in notes) and max(n["pitch"] for n in notes) <= 84   # C2 .. C6
    assert all(0 <= n["start"] < n["end"] <= 3.0 and 1 <= n["velocity"] <= 127 for n in notes)
    assert sum(n["end"] - n["start"] for n in notes) > 4   # chords: more note time than audio
    assert list(table.columns) == tab.COLUMNS and len(table) == len(notes)
    tempo, division, parsed, bends, programs = read_midi(Path(midi).read_bytes())
    assert tempo == 500_000 and programs == [4]
    expected = sorted((n["start"], n["end"], n["pitch"], n["velocity"]) for n in notes)
    assert [p[2:] for p in parsed] == [e[2:] for e in expected]
    np.testing.assert_allclose([p[:2] for p in parsed], [e[:2] for e in expected], atol=0.6 / 960)
    assert roll.ndim == 3 and roll.shape[1] == 1000 and (roll.min(axis=2) < 100).mean() > 0.01


def test_pitch_bends_reach_the_midi_file_and_are_reset(call, tmp_path):
    result = nm.transcribe_file(call, SAX)
    bent = [n for n in result["notes"] if n["bends"] and any(n["bends"])]
    assert len(bent) >= 5
    _, _, parsed, bends, _ = read_midi(nm.save(result, tmp_path)[1].read_bytes())
    assert len(parsed) == 60 and len(bends) >= 2 * len(bent)
    assert bends[-1][1] == 8192   # the last bent note's end puts the bend back to 0
    # Each bend sits at its own frame: a third of a semitone is 4096 / 3 (a 2-semitone range).
    values = {v - 8192 for _, v in bends}
    assert values <= {int(round(k * 4096 / 3)) for k in range(-6, 7)}


def test_a_pure_tone_gives_its_note_only_and_silence_none(call):
    result = nm.transcribe(call, tone(440.0))
    assert [(n["note"], n["pitch"]) for n in result["notes"]] == [("A4", 69)]
    assert result["notes"][0]["start"] < 0.05 and result["notes"][0]["end"] > 1.95
    assert [n["note"] for n in nm.transcribe(call, tone(261.63))["notes"]] == ["C4"]
    assert nm.transcribe(call, np.zeros(2 * RATE, np.float32))["notes"] == []
    assert nm.transcribe(call, np.zeros(100, np.float32))["notes"] == []   # shorter than a frame


def test_a_videos_sound_and_a_silent_file_through_the_tab(engine, tmp_path):
    from video_helpers import make_test_video

    video = make_test_video(tmp_path / "tone.mp4", frames=50, width=64, height=64)  # 2 s of 440 Hz
    table, midi, _, result = wired(engine, tab.transcribe_notes, "transcribe the notes")(str(video))
    assert list(table["note"]) == ["A4"] and read_midi(Path(midi).read_bytes())[2][0][2] == 69
    silent = write_wav(tmp_path / "silent.wav", np.zeros(2 * RATE, np.float32), RATE)
    table, midi, roll, result = wired(engine, tab.transcribe_notes, "transcribe the notes")(str(silent))
    assert result["notes"] == [] and len(table) == 0 and read_midi(Path(midi).read_bytes())[2] == []
    assert roll.shape[1] == 1000


def test_the_options_change_what_is_found(call):
    plain = nm.transcribe_file(call, CANTINA)["notes"]
    strict = nm.transcribe_file(call, CANTINA, {"onset_threshold": 0.8, "frame_threshold": 0.5})["notes"]
    long_only = nm.transcribe_file(call, CANTINA, {"min_note_ms": 300})["notes"]
    assert len(strict) < len(plain) and len(long_only) < len(plain)
    assert all(n["end"] - n["start"] > 0.3 for n in long_only)


def test_bad_input_says_what_is_wrong(engine, tmp_path):
    with pytest.raises(UserFacingError, match="Upload"):
        capability.check({}, {"audio": None})
    with pytest.raises(UserFacingError, match="onset threshold"):
        capability.check({"onset_threshold": 1.0}, {"audio": str(CANTINA)})
    with pytest.raises(UserFacingError, match="frame threshold"):
        capability.check({"frame_threshold": "much"}, {"audio": str(CANTINA)})
    with pytest.raises(UserFacingError, match="minimum note length"):
        capability.check({"min_note_ms": 5000}, {"audio": str(CANTINA)})
    with pytest.raises(UserFacingError, match="as a file"):
        capability.check({}, {"audio": tone(440)})
    text = tmp_path / "song.mp3"
    text.write_text("la la la " * 100)
    with pytest.raises(UserFacingError, match="not audio"):
        tab.transcribe_notes(engine, str(text))
    with pytest.raises(UserFacingError, match="frame threshold"):
        tab.transcribe_notes(engine, str(CANTINA), frame_threshold=0.0)
    with pytest.raises(UserFacingError, match="not audio"):   # the job queue refuses it at submit too
        engine.jobs.submit(nm.NOTES_LONG, {}, inputs={"audio": text})
    long = write_wav(tmp_path / "long.wav", np.zeros(RATE * 62, np.float32), RATE)
    with pytest.raises(MediaError, match="too long"):
        nm.transcribe_file(lambda *a: None, long)


def test_a_long_file_runs_as_a_job_with_the_notes_of_one_pass(engine, call, tmp_path):
    # 80 s of the real saxophone at its own 48 kHz: two chunks, the edge at 59.4 s mid-phrase.
    sax = read_audio(SAX, 48000)
    path = write_wav(tmp_path / "sax5.wav", np.tile(sax, 5), 48000)
    job = list(engine.jobs.follow(engine.jobs.submit(nm.NOTES_LONG, {}, inputs={"audio": path})))[-1]
    assert job["state"] == "done", job["error"]
    result = json.loads(Path(job["result"]).read_text())
    direct = nm.transcribe_file(call, path, max_seconds=None)
    assert len(result["notes"]) == len(direct["notes"]) == 299
    # One ffmpeg stream feeds the chunks, on the model's window grid: the notes of one pass.
    assert result == direct
    assert result["duration_s"] == pytest.approx(80.0, abs=0.01)
    assert len(read_midi(Path(job["result"]).with_name("notes.mid").read_bytes())[2]) == 299
    _, midi, _, via_tab = wired(engine, tab.transcribe_notes, "transcribe the notes")(str(path))   # the tab sends it to the queue too
    assert via_tab == result and Path(midi).name == "notes.mid"


class _Context:
    """What notes_job asks of a JobContext, for running it by hand (a resumed job, here)."""

    def __init__(self, call, work_dir: Path, audio: Path):
        self.call, self.work_dir, self._audio, self.params = call, work_dir, audio, {}
        self.resumed = None

    def input(self, name):
        return self._audio

    def resumed_from(self, position, unit="frame"):
        self.resumed = (position, unit)

    def save_checkpoint(self, **values):
        pass

    def progress(self, fraction, note=""):
        pass

    def check_cancelled(self):
        pass


def test_a_killed_job_resumes_at_its_last_finished_chunk(call, tmp_path):
    sax = read_audio(SAX, RATE)
    path = write_wav(tmp_path / "sax5.wav", np.tile(sax, 5), RATE)
    whole = _Context(call, tmp_path / "whole", path)
    whole.work_dir.mkdir()
    expected = json.loads(Path(nm.notes_job(whole)).read_text())
    assert whole.resumed is None and len(expected["notes"]) > 250
    # As if killed after the first chunk: its notes saved, nothing after.
    resumed = _Context(call, tmp_path / "resumed", path)
    (resumed.work_dir / "notes_chunks").mkdir(parents=True)
    first = whole.work_dir / "notes_chunks" / "00000.json"
    (resumed.work_dir / "notes_chunks" / "00000.json").write_bytes(first.read_bytes())
    assert json.loads(Path(nm.notes_job(resumed)).read_text()) == expected
    assert resumed.resumed == (pytest.approx(59.35, abs=0.01), "s")
