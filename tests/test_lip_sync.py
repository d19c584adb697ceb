"""Lip sync (tabs/lip_sync) on a still portrait, end to end: real recorded speech (Gradio's
cate_blanch.mp3, cut to 1.2 s), the real astronaut photo, the one face detector, and ONNX graphs
with exactly FaceFusion's wav2lip_gan_96 signature (inputs source (1,1,80,16) and target
(1,6,96,96) float32, one output (1,3,96,96) float32), brought through store.hub_files.bring as a
user's own file (licence accepted, trusted: no sha256 of the real file is published).

The real weights cannot be downloaded here. The graphs' effects are known exactly, so the test sees
what the pipeline feeds them: "probe" puts the mel window's level ((mean + 4) / 8) in the output's
channel 0 (blue in Wav2Lip's BGR) and hands the reference's channels 4-5 (green, red) back;
"masked" hands back channels 0-2 (the crop with its lower half zeroed); "reference" channels 3-5.
The probe graph also carries 145 MB of random float32 weights, gathered at an index the inputs
decide (so no optimiser can drop them): as many weight bytes as the real network's file, for
its footprint.
"""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import soundfile
import scipy.signal
import skimage.data
from onnx import TensorProto, helper, numpy_helper, save
from PIL import Image

import gradio as gr
import librosa
from analysers import face_align, face_detector
from analysers.face_detector import FACE_DETECTOR
from app_calls import wired
from capability_engine import capability_engine
from face_studio import bring
from engine.media.audio import read_audio, write_wav
from engine.media.ffmpeg import command
from engine.media.video import probe
from store import hub_files
from store.manifest import SESSION_BYTES, local_path, signature_problems
from tabs.lip_sync import check, job_kinds, manifest, mel
from tabs.lip_sync import model as ls
from tabs.lip_sync import tab
from video_helpers import decode_all

GRADIO_AUDIO = Path(gr.__file__).parent / "media_assets" / "audio"
SPEECH_S = 1.2
HEAVY_SHAPE = (35_440, 1024)   # 145,162,240 bytes of float32: the real file is 145,175,471 bytes


# ------------------------------------------------------------------ graphs

def wav2lip_graph(path, mode: str = "probe", heavy: bool = False, names=("source", "target"),
                  target_shape=manifest.FACES):
    """A graph with wav2lip_gan_96's signature whose output is known exactly (see the module)."""
    source, target = names
    consts = {"axis1": np.array([1], np.int64)}
    first = {"probe": 4, "masked": 0, "reference": 3}[mode]
    consts.update(lo=np.array([first], np.int64), hi=np.array([first + (2 if mode == "probe" else 3)], np.int64))
    nodes = [helper.make_node("Slice", [target, "lo", "hi", "axis1"], ["kept"])]
    if mode == "probe":
        consts.update(four=np.array(4, np.float32), eighth=np.array(0.125, np.float32),
                      plane=np.array([1, 1, 96, 96], np.int64))
        nodes += [helper.make_node("ReduceMean", [source], ["level"], keepdims=1),
                  helper.make_node("Add", ["level", "four"], ["shifted"]),
                  helper.make_node("Mul", ["shifted", "eighth"], ["blue1"]),
                  helper.make_node("Expand", ["blue1", "plane"], ["blue"]),
                  helper.make_node("Concat", ["blue", "kept"], ["y"], axis=1)]
    else:
        nodes.append(helper.make_node("Identity", ["kept"], ["y"]))
    last = "y"
    if heavy:
        consts["weights"] = np.random.default_rng(0).standard_normal(HEAVY_SHAPE, dtype=np.float32) * 0.01
        consts["zero"] = np.array(0, np.float32)
        nodes += [helper.make_node("ReduceMean", [source], ["m"], keepdims=0),
                  helper.make_node("Mul", ["m", "zero"], ["m0"]),
                  helper.make_node("Cast", ["m0"], ["row"], to=TensorProto.INT64),
                  helper.make_node("Gather", ["weights", "row"], ["picked"], axis=0),
                  helper.make_node("ReduceSum", ["picked"], ["total"], keepdims=0),
                  helper.make_node("Mul", ["total", "zero"], ["nothing"]),
                  helper.make_node("Add", ["y", "nothing"], ["y2"])]
        last = "y2"
    nodes.append(helper.make_node("Identity", [last], ["output"]))
    graph = helper.make_graph(
        nodes, "wav2lip", [helper.make_tensor_value_info(source, TensorProto.FLOAT, list(manifest.MEL)),
                           helper.make_tensor_value_info(target, TensorProto.FLOAT, list(target_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(manifest.FACE_OUT))],
        initializer=[numpy_helper.from_array(a, n) for n, a in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return Path(path)


def syncer(path) -> ls.LipSyncer:
    return ls.LipSyncer(onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]))


# ------------------------------------------------------------------ inputs

def cut_speech(path, start_s: float = 1.0, seconds: float = SPEECH_S, rate: int = 44100):
    """A piece of real recorded speech (a woman's interview) as a WAV at rate."""
    subprocess.run(command("-v", "error", "-ss", str(start_s), "-i", str(GRADIO_AUDIO / "cate_blanch.mp3"),
                           "-t", str(seconds), "-ac", "1", "-ar", str(rate), "-y", str(path)), check=True)
    return Path(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("lip_sync")


@pytest.fixture(scope="module")
def speech(folder):
    return cut_speech(folder / "speech.wav")


@pytest.fixture(scope="module")
def portrait(folder):
    path = folder / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)   # 512x512, one face
    return path


@pytest.fixture(scope="module")
def probe_graph(folder):
    return wav2lip_graph(folder / "graphs" / "probe.onnx", heavy=True)


@pytest.fixture(scope="module")
def engine(folder, probe_graph):
    data = folder / "data"
    bring(data, manifest.WAV2LIP_GAN, probe_graph)
    with capability_engine(folder, face_detector.specs() + ls.specs(data), job_kinds(data)) as engine:
        yield engine


@pytest.fixture(scope="module")
def box(engine):
    """The padded box of the astronaut's face in the photo."""
    photo = skimage.data.astronaut()
    faces = engine.infer("detect", FACE_DETECTOR, lambda d: face_align.find_faces(d, photo, None))
    assert len(faces) == 1
    return ls.padded_box(faces[0], 512, 512)


# ------------------------------------------------------------------ the mel, by hand

def hand_mel(samples: np.ndarray) -> np.ndarray:
    """Wav2Lip's mel written out from its formulas (facts §3), with numpy's FFT: preemphasis,
    reflect-padded frames of 800 under a periodic Hann window every 200 samples, |rfft|, the
    Slaney bank, then clip(1.6 log10(max(1e-5, mel)) + 2.4, -4, 4)."""
    x = scipy.signal.lfilter([1, -0.97], [1], samples.astype(np.float64))
    padded = np.pad(x, 400, mode="reflect")
    count = 1 + len(samples) // 200
    frames = np.stack([padded[i * 200:i * 200 + 800] for i in range(count)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).T
    bank = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, norm="slaney", htk=False)
    return np.clip(1.6 * np.log10(np.maximum(1e-5, bank @ magnitude)) + 2.4, -4, 4)


def test_the_mel_is_wav2lips():
    t = np.arange(16_000) / 16_000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * np.minimum(1, t * 4)).astype(np.float32)   # 1 s, faded in
    made = mel.melspectrogram(tone)
    assert made.shape == (80, 1 + 16_000 // 200) == (80, 81) and made.dtype == np.float32
    assert np.abs(made - hand_mel(tone)).max() < 1e-4   # measured: 1.6e-7
    assert made.min() >= -4 and made.max() <= 4
    # 440 Hz sits in the band whose centre is nearest to it; silence (the fade's start) at -4.
    centres = librosa.mel_frequencies(n_mels=82, fmin=55, fmax=7600)[1:-1]
    assert abs(int(made[:, 40].argmax()) - int(np.abs(centres - 440).argmin())) <= 1
    assert made[:, 40].max() > 1.5 and made[70:, 40].max() < -2.5


def test_the_mel_of_real_speech(speech):
    samples = read_audio(speech, 16_000)
    made = mel.melspectrogram(samples)
    assert made.shape == (80, 1 + len(samples) // 200)
    assert np.abs(made - hand_mel(samples)).max() < 1e-4   # measured: 2.4e-7
    assert made.min() >= -4 and made.max() <= 4 and made.max() - made.min() > 4   # speech spans the range


def test_windows_start_where_wav2lip_starts_them():
    starts = mel.chunk_starts(81, 25)   # 1 s of audio: 80 / 25 = 3.2 hops per frame
    assert starts[:6] == [0, 3, 6, 9, 12, 16] and starts[-2:] == [64, 65] and len(starts) == 22
    starts = mel.chunk_starts(81, 30)   # 2.67 hops per frame
    assert starts[:5] == [0, 2, 5, 8, 10] and starts[-2:] == [64, 65] and len(starts) == 26
    assert mel.chunk_starts(16, 25) == [0, 0]   # exactly one window: Wav2Lip's loop gives it twice
    window = mel.chunk(np.arange(80 * 81, dtype=np.float32).reshape(80, 81), 65)
    assert window.shape == (1, 1, 80, 16) and window[0, 0, 0, 0] == 65 and window[0, 0, 0, -1] == 80
    with pytest.raises(Exception, match="The audio is too short"):
        mel.chunk_starts(15, 25)


# ------------------------------------------------------------------ boxes, feed, paste back

def test_boxes_are_padded_clipped_and_smoothed_as_wav2lip():
    assert ls.padded_box({"box": [10.7, 20.2, 50.9, 60.5]}, 100, 100) == [10, 20, 50, 70]
    assert ls.padded_box({"box": [-3, 80, 40, 95]}, 100, 100) == [0, 80, 40, 100]   # clipped
    boxes = [[i, 0, 10 + i, 10] for i in range(7)]
    smoothed = ls.smooth([list(b) for b in boxes])
    # Each the mean of itself and the next four (truncated); the last two from the last five,
    # which by then hold averaged boxes (Wav2Lip's in-place loop).
    assert smoothed[0] == [2, 0, 12, 10] and smoothed[2] == [4, 0, 14, 10]
    assert smoothed[3] == smoothed[5] == smoothed[6] == [4, 0, 14, 10]   # e.g. i=3: mean(4,3,4,5,6)
    assert ls.smooth([None, [0, 0, 10, 10], None]) == [None, [0, 0, 10, 10], None]


def test_the_graph_gets_the_masked_crop_then_the_reference_in_bgr(folder, box):
    photo = skimage.data.astronaut()
    x1, y1, x2, y2 = box
    window = mel.chunk(np.zeros((80, 16), np.float32), 0)
    masked = ls.sync_frame(syncer(wav2lip_graph(folder / "g" / "masked.onnx", "masked")), photo, box, window)
    kept = ls.sync_frame(syncer(wav2lip_graph(folder / "g" / "reference.onnx", "reference")), photo, box, window)
    outside = np.ones(photo.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(masked[outside], photo[outside]) and np.array_equal(kept[outside], photo[outside])
    h, w = y2 - y1, x2 - x1
    lower = np.s_[y1 + int(0.6 * h):y1 + int(0.85 * h), x1 + w // 4:x2 - w // 4]
    upper = np.s_[y1 + int(0.15 * h):y1 + int(0.4 * h), x1 + w // 4:x2 - w // 4]
    assert masked[lower].mean() < 10 < photo[lower].mean() - 60   # zeroed in (measured: 0.1, the photo 177)
    # The upper half and the reference come back but for two bilinear resamples (measured: 4.0, 2.4).
    assert np.abs(masked[upper].astype(int) - photo[upper]).mean() < 6
    assert np.abs(kept[y1:y2, x1:x2].astype(int) - photo[y1:y2, x1:x2]).mean() < 5
    inputs = ls.faces_input(photo, box)
    assert inputs.shape == (1, 6, 96, 96) and inputs.dtype == np.float32 and 0 <= inputs.min() <= inputs.max() <= 1
    assert np.array_equal(inputs[0, :3, :48], inputs[0, 3:, :48]) and inputs[0, :3, 48:].max() == 0
    # The graph sees B, G, R: on the astronaut's face red exceeds blue (skin), so channel 5 > 3.
    skin = photo[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0)
    assert skin[0] > skin[2] + 40                          # the photo is RGB (measured: 55 apart)
    assert inputs[0, 5].mean() - inputs[0, 3].mean() == pytest.approx((skin[0] - skin[2]) / 255, abs=0.02)


def test_the_output_is_read_as_bgr_and_the_mel_window_goes_in(folder, box):
    photo = skimage.data.astronaut()
    x1, y1, x2, y2 = box
    graph = syncer(wav2lip_graph(folder / "g" / "probe_small.onnx", "probe"))
    centre = np.s_[(y1 + y2) // 2 - 5:(y1 + y2) // 2 + 5, (x1 + x2) // 2 - 5:(x1 + x2) // 2 + 5]
    for level, blue in ((4.0, 255), (-4.0, 0), (0.0, 127)):   # output channel 0 = (mean + 4) / 8
        out = ls.sync_frame(graph, photo, box, np.full((1, 1, 80, 16), level, np.float32))
        assert np.abs(out[centre][..., 2].astype(int) - blue).max() <= 1, level      # blue is channel 0
        assert np.abs(out[centre][..., :2].astype(int) - photo[centre][..., :2]).mean() < 6   # red, green kept
    assert np.array_equal(ls.sync_frame(graph, photo, None, np.zeros((1, 1, 80, 16), np.float32)), photo)


# ------------------------------------------------------------------ the photo job, through the tab

def test_a_still_portrait_speaks_the_audio(engine, portrait, speech, box, probe_graph):
    result = wired(engine, tab.lip_sync_photo, "make the portrait speak")(str(portrait), str(speech))
    job = next(j for j in engine.jobs.list() if j["result"] == result)
    assert job["capability"] == "lip_sync_photo:wav2lip-gan-96" and job["model"] == "wav2lip-gan-96"
    samples = read_audio(speech, 16_000)
    windows = mel.melspectrogram(samples)
    starts = mel.chunk_starts(windows.shape[1], 25)
    info = probe(result)
    # As many frames as mel windows at 25 fps: 1.2 s gives 27 (Wav2Lip's loop ends a frame early).
    assert (info.frames, info.width, info.height, info.fps) == (len(starts), 512, 512, 25) and info.frames == 27
    assert abs(info.frames - SPEECH_S * 25) <= 4
    # The result carries the driving audio: its length and its samples.
    heard = read_audio(result, 16_000)
    assert abs(len(heard) / 16_000 - SPEECH_S) < 0.05
    n = min(len(heard), len(samples))
    assert np.corrcoef(heard[:n], samples[:n])[0, 1] > 0.95
    # The detector once (one photo), Wav2Lip once per chunk of 32 frames.
    assert job["runs"][0]["models"].count(FACE_DETECTOR) == 1
    assert job["runs"][0]["models"].count("wav2lip-gan-96") == 1
    frames = decode_all(Path(result)).astype(int)
    photo = skimage.data.astronaut()
    x1, y1, x2, y2 = box
    centre = np.s_[(y1 + y2) // 2 - 4:(y1 + y2) // 2 + 4, (x1 + x2) // 2 - 4:(x1 + x2) // 2 + 4]
    expected = np.array([np.floor(255 * (windows[:, s:s + 16].mean() + 4) / 8) for s in starts])
    blue = frames[:, centre[0], centre[1], 2].mean(axis=(1, 2))
    # Each frame shows its own window of the speech (measured: within 3.5 of 255 after the codec).
    assert np.abs(blue - expected).max() < 6 and expected.std() > 10
    outside = np.ones((512, 512), bool)
    outside[y1:y2, x1:x2] = False
    # Outside the padded box only the codec touches: against the photo as the job held it (its
    # one-frame video), measured 1.5 of 255; against the PNG, two encodings of a detailed photo (3.9).
    still = decode_all(engine.jobs.job_dir(job["id"]) / "still.mp4")[0].astype(int)
    assert np.abs(frames[:, outside] - still[outside]).mean() < 2.0
    assert np.abs(frames[:, outside] - photo[outside]).mean() < 5.0
    footprint = engine.footprints.get("wav2lip-gan-96", "cpu").load_bytes
    assert abs(probe_graph.stat().st_size - manifest.WAV2LIP_BYTES) < 0.001 * manifest.WAV2LIP_BYTES
    # The 145 MB graph's load, measured by the engine (measured: 145,348,816 bytes).
    assert footprint is not None and 100 * 10**6 < footprint < 600 * 10**6, footprint


def test_a_photo_without_a_face_says_so(engine, folder, speech):
    coffee = folder / "coffee.png"
    Image.fromarray(skimage.data.coffee()).save(coffee)
    with pytest.raises(gr.Error, match="No face was found in this photo, so there are no lips to move"):
        wired(engine, tab.lip_sync_photo, "make the portrait speak")(str(coffee), str(speech))


def test_bad_inputs_are_refused_before_they_queue(engine, folder, portrait, speech):
    handler = wired(engine, tab.lip_sync_photo, "make the portrait speak")
    silent, empty, short, text = (folder / n for n in ("silent.wav", "empty.wav", "short.wav", "notes.mp3"))
    write_wav(silent, np.zeros(16_000, np.float32), 16_000)
    soundfile.write(empty, np.zeros(0, np.float32), 16_000)   # a valid WAV header, no samples
    write_wav(short, read_audio(speech, 16_000)[:2000], 16_000)
    text.write_text("this is not audio\n" * 50)
    before = len(engine.jobs.list())
    cases = [((str(portrait), None), "Upload the audio the lips should follow first"),
             ((None, str(speech)), "Upload a portrait photo first"),
             ((str(portrait), str(silent)), "The audio is silent"),
             ((str(portrait), str(empty)), "(?i)audio could not be read|no audio|empty"),
             ((str(portrait), str(short)), "The audio is too short"),
             ((str(portrait), str(text)), "not audio or video"),
             ((str(text), str(speech)), "(?i)photo|image")]
    for args, said in cases:
        with pytest.raises(gr.Error, match=said):
            handler(*args)
    assert len(engine.jobs.list()) == before


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lip_sync_bare")
    data = folder / "data"
    with capability_engine(folder, face_detector.specs() + ls.specs(data), job_kinds(data)) as engine:
        yield engine


def test_a_missing_file_says_what_to_fetch_and_where(bare, portrait, speech):
    with pytest.raises(gr.Error, match="Lip sync needs the file wav2lip_gan_96.onnx, which is not here yet"):
        wired(bare, tab.lip_sync_photo, "make the portrait speak")(str(portrait), str(speech))
    line = tab.model_status(bare)
    entry = manifest.WAV2LIP_GAN
    for said in ("file missing", "wav2lip_gan_96.onnx", entry.urls[0], entry.urls[1],
                 str(local_path(bare.data_dir, entry)), "No sha256 of a good copy is known", "non-commercial"):
        assert said in line, said
    assert bare.jobs.list() == []


def test_wrong_files_are_refused_plainly(bare, folder):
    use = wired(bare, tab.bring_model_file, "use the model file")
    good = wav2lip_graph(folder / "mine" / "good.onnx")
    with pytest.raises(gr.Error, match="not for commercial use"):   # asked first, then remembered
        use(str(good), False, True)
    renamed = wav2lip_graph(folder / "mine" / "renamed.onnx", names=("mel", "faces"))
    with pytest.raises(Exception, match="should have an input named 'source'"):
        bring(bare.data_dir, manifest.WAV2LIP_GAN, renamed)
    wide = wav2lip_graph(folder / "mine" / "wide.onnx", target_shape=(1, 6, 256, 256))
    assert signature_problems(wide, manifest.WAV2LIP_GAN) == [
        "input 'target' should have shape [1, 6, 96, 96]; this file's is [1, 6, 256, 256]."]
    # Unchecked hashes: without trust, no file is taken (no good copy's sha256 is known)...
    with pytest.raises(gr.Error, match="unchecked: no sha256 of a good copy of wav2lip_gan_96.onnx is known"):
        use(str(good), True, False)
    # ...and a file copied into place by hand is checked before it is loaded.
    path = local_path(bare.data_dir, manifest.WAV2LIP_GAN)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wide.read_bytes())
    assert "cannot be used" in tab.model_status(bare)
    path.unlink()


def test_the_download_needs_trust_and_says_plainly_when_offline(tmp_path, monkeypatch):
    """The licence is asked for first; no sha256 is published, so the download asks for trust;
    where no URL answers (a closed local port: the test never downloads the real file) the refusal
    names the URLs and the exact path, before any job is queued."""
    with capability_engine(tmp_path, face_detector.specs() + ls.specs(tmp_path / "data"), []) as bare:
        download = wired(bare, tab.download_model_file, "download the model file")
        with pytest.raises(gr.Error, match="^(?!Cannot download).*not for commercial use"):
            download(False, True)
        _offline_download(bare, download, monkeypatch)


def _offline_download(bare, download, monkeypatch):
    with pytest.raises(gr.Error, match="No sha256 of a good copy of wav2lip_gan_96.onnx is known"):
        download(True, False)
    offline = dataclasses.replace(manifest.WAV2LIP_GAN, urls=("http://127.0.0.1:9/wav2lip_gan_96.onnx",))
    monkeypatch.setattr(tab, "WAV2LIP_GAN", offline)
    with pytest.raises(gr.Error) as refused:
        download(True, True)
    assert offline.urls[0] in str(refused.value) and str(local_path(bare.data_dir, offline)) in str(refused.value)
    assert bare.jobs.list() == []


def test_a_brought_file_is_in_place_with_its_unchecked_hash_said(engine):
    line = tab.model_status(engine)
    assert line.startswith("**Wav2Lip GAN**: file in place") and "sha256 could not be checked" in line


def test_the_spec_is_a_heavy_onnx_model_with_its_own_function():
    (spec,) = ls.specs("/nowhere")
    assert (spec.name, spec.role, spec.runtime, spec.networks) == ("wav2lip-gan-96", "heavy", "onnxruntime", 1)
    assert spec.function == "lip sync (Wav2Lip GAN)" and spec.estimate_bytes == manifest.WAV2LIP_BYTES + SESSION_BYTES
    assert spec.loader.path.as_posix() == "/nowhere/hub-files/wav2lip-gan-96/wav2lip_gan_96.onnx"
    assert manifest.WAV2LIP_GAN.sha256 == () and manifest.WAV2LIP_GAN.commercial is False
    with pytest.raises(Exception, match="Upload a video first"):
        check({}, {"video": None, "audio": "x"})
