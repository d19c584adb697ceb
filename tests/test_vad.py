"""Voice activity and silence cutting through a real engine, the silero-vad wheel's ONNX weights,
espeak-ng speech and real ffmpeg."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tabs.vad
from capability_engine import capability_engine
from engine import UserFacingError
from engine.media.audio import probe_audio, read_audio, replace_audio, write_wav
from engine.media.video import ffmpeg_exe, probe, read_chunks
from video_helpers import make_test_video
from tabs.vad import cut
from tabs.vad import model as vad
from tabs.vad import tab as vad_tab
from tabs.tts.espeak import synthesize

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Silence is golden, but speech is silver."]
FPS = 25


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("vad"),
                           vad.specs(), tabs.vad.job_kinds(), job_threads=1) as engine:
        yield engine


@pytest.fixture(scope="module")
def speech():
    return [synthesize(text) for text in SENTENCES]


def place(speech, silences):
    """silence, sentence, silence, sentence, ..., silence: (samples, rate, [(start, end)] of speech)."""
    rate = speech[0][1]
    parts, spans, t = [], [], 0.0
    for i, gap in enumerate(silences):
        parts.append(np.zeros(int(round(gap * rate)), np.float32))
        t += gap
        if i < len(silences) - 1:
            samples = speech[i % len(speech)][0]
            parts.append(samples)
            spans.append((t, t + samples.size / rate))
            t += samples.size / rate
    return np.concatenate(parts), rate, spans


def to_16k(path):
    return read_audio(path, vad.SAMPLE_RATE)


def analyse_file(engine, path, max_seconds=vad.INTERACTIVE_MAX_S):
    """The VAD over a whole file in one run, as the tab does for short files."""
    samples = read_audio(path, vad.SAMPLE_RATE, max_seconds=max_seconds)
    with engine.run("detect_speech", bucket=vad.seconds_bucket(samples.size / vad.SAMPLE_RATE)) as run:
        return vad.analyse(run.call, samples)


def detect_speech(engine, samples, **options):
    with engine.run("detect_speech", bucket=vad.seconds_bucket(samples.size / vad.SAMPLE_RATE)) as run:
        return vad.detect_speech(run.call, samples, **options)


@pytest.fixture(scope="module")
def placed(tmp_path_factory, speech):
    audio, rate, spans = place(speech, [1.5, 2.0, 1.0])
    path = write_wav(tmp_path_factory.mktemp("placed") / "placed.wav", audio, rate)
    return path, spans


def stock_probs(samples):
    """The stock silero_vad.onnx, one 512-sample frame per call, as the package's OnnxWrapper
    feeds it: 64 samples of context before each frame, the state carried between calls."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(vad.model_path().with_name("silero_vad.onnx")),
                                           providers=["CPUExecutionProvider"])
    n = -(-samples.size // 512)
    padded = np.zeros(n * 512, np.float32)
    padded[: samples.size] = samples
    state, context, out = np.zeros((2, 1, 128), np.float32), np.zeros((1, 64), np.float32), []
    for i in range(n):
        x = np.concatenate([context, padded[None, i * 512:(i + 1) * 512]], axis=1)
        prob, state = session.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
        out.append(prob[0, 0])
        context = x[:, -64:]
    return np.array(out, np.float32)


def test_the_sequence_model_gives_the_stock_models_probabilities(placed):
    assert vad.unavailable_reason() is None
    samples = to_16k(placed[0])
    session = vad.load("cpu")
    probs, _ = vad.speech_probs(session, samples)
    assert probs.shape == (-(-samples.size // 512),)
    np.testing.assert_allclose(probs, stock_probs(samples), atol=1e-5)
    # In chunks, with the state carried over, the same numbers as one pass.
    state, chunks = None, []
    for start in range(0, samples.size, 512 * 7):
        values, state = vad.speech_probs(session, samples[start:start + 512 * 7], state)
        chunks.append(values)
    np.testing.assert_array_equal(np.concatenate(chunks), probs)


@pytest.mark.gpu
def test_the_session_runs_where_onnx_runtime_really_runs(placed):
    from engine.runtimes import onnx_runtime

    (spec,) = vad.specs()
    assert spec.device == onnx_runtime.spec_device()
    cpu = vad.load("cpu")
    assert cpu.get_providers() == [onnx_runtime.CPU] and cpu.get_session_options().intra_op_num_threads == 1
    if not onnx_runtime.cuda_works():   # this machine: asking for a GPU says why there is none
        with pytest.raises(RuntimeError, match="no CUDA provider of onnxruntime loads here"):
            vad.load("cuda:0")
        return
    gpu = vad.load("cuda:0")
    assert gpu.get_providers()[0] == onnx_runtime.CUDA
    samples = to_16k(placed[0])
    np.testing.assert_allclose(vad.speech_probs(gpu, samples)[0], vad.speech_probs(cpu, samples)[0], atol=1e-3)


def test_the_port_matches_silero_timestamps(placed):
    import torch

    threads = torch.get_num_threads()
    from silero_vad import get_speech_timestamps_from_probs
    torch.set_num_threads(threads)  # the package sets 1 thread for the whole process
    samples = to_16k(placed[0])
    rng = np.random.default_rng(0)
    cases = [vad.speech_probs(vad.load("cpu"), samples)[0]] + [
        np.clip(np.convolve(rng.random(400), np.ones(5) / 5, "same"), 0, 1) for _ in range(5)]
    for probs in cases:
        for threshold, min_speech, min_silence, pad in [(0.5, 0.25, 0.1, 0.03), (0.4, 0.1, 0.3, 0.2),
                                                        (0.6, 0.0, 0.05, 0.0)]:
            n = len(probs) * 512 - 100
            ours = vad.speech_segments(probs, n, threshold, min_speech, min_silence, pad)
            theirs = get_speech_timestamps_from_probs(
                list(map(float, probs)), threshold=threshold, min_speech_duration_ms=min_speech * 1000,
                min_silence_duration_ms=min_silence * 1000, speech_pad_ms=pad * 1000,
                audio_length_samples=n)
            assert ours == [{"start": round(s["start"] / 16000, 3), "end": round(s["end"] / 16000, 3)}
                            for s in theirs]


def test_segments_fall_where_the_speech_was_placed(engine, placed):
    path, spans = placed
    segments = detect_speech(engine, to_16k(path), min_silence_s=0.3)
    assert len(segments) == len(spans) == 2
    for segment, (start, end) in zip(segments, spans):
        assert abs(segment["start"] - start) < 0.2 and abs(segment["end"] - end) < 0.2, (segment, start, end)


def test_noise_and_silence_have_no_speech(engine):
    rng = np.random.default_rng(1)
    assert detect_speech(engine, np.zeros(16000 * 5, np.float32)) == []
    assert detect_speech(engine, (0.1 * rng.standard_normal(16000 * 5)).astype(np.float32)) == []
    assert detect_speech(engine, np.zeros(0, np.float32)) == []
    with pytest.raises(UserFacingError, match="threshold"):
        tabs.vad.check({"threshold": 1.5}, {"audio": np.zeros(16000, np.float32)})


def test_keep_ranges_cut_only_long_gaps_and_leave_a_pad():
    segments = [{"start": 0.2, "end": 2.0}, {"start": 2.3, "end": 4.0}, {"start": 7.0, "end": 8.0}]
    # Leading 0.2 s and the 0.3 s gap stay; 3 s gap and the 2 s tail go, less the pad.
    assert cut.keep_ranges(segments, 10.0, 0.5, 0.1) == [(0.0, 4.1), (6.9, 8.1)]
    assert cut.keep_ranges(segments, 10.0, 5.0, 0.1) == [(0.0, 10.0)]
    assert cut.keep_ranges([], 10.0, 0.5) == []


def test_cut_silence_shortens_a_wav_by_the_silence_in_it(engine, placed, tmp_path):
    path, spans = placed
    pad = cut.DEFAULT_PAD_S
    out = cut.cut_silence(analyse_file(engine, path), path, min_silence_s=0.5, out_dir=tmp_path)
    assert out.suffix == ".wav" and out.parent == tmp_path
    before, after = probe_audio(path), probe_audio(out)
    assert after.sample_rate == before.sample_rate and not after.has_video
    # 4.5 s of silence placed; 0.15 s stays beside each of the 4 speech edges.
    removed = before.duration_s - after.duration_s
    assert abs(removed - (4.5 - 4 * pad)) < 0.3, removed
    # The speech itself is all there: the cut file holds as much loud sound as the source.
    loud = lambda x: int((np.abs(x) > 0.02).sum())
    assert abs(loud(to_16k(out)) - loud(to_16k(path))) < 0.02 * loud(to_16k(path))


def bright_and_loud(path):
    """Runs of white frames and of loud sound, in seconds, pauses under 0.2 s bridged."""
    def runs(mask, step):
        found, start, last = [], None, None
        for i in np.flatnonzero(mask):
            if start is not None and (i - last) * step > 0.2:
                found.append((start * step, (last + 1) * step))
                start = None
            start = i if start is None else start
            last = i
        return found + ([(start * step, (last + 1) * step)] if start is not None else [])

    frames = np.concatenate([chunk for _, chunk in read_chunks(path, 64)])
    bright = frames.reshape(len(frames), -1).mean(axis=1) > 128
    sound = read_audio(path, 16000)
    blocks = np.abs(sound[: sound.size // 160 * 160]).reshape(-1, 160).max(axis=1)
    return runs(bright, 1 / FPS), runs(blocks > 0.02, 0.01)


@pytest.fixture(scope="module")
def flashing_video(tmp_path_factory, speech):
    """Frames white exactly while a sentence plays, black in the silences."""
    folder = tmp_path_factory.mktemp("flash")
    audio, rate, spans = place(speech, [1.0, 2.0, 1.0])
    write_wav(folder / "speech.wav", audio, rate)
    frames = int(np.ceil(audio.size / rate * FPS))

    def draw(i):
        white = any(a <= i / FPS < b for a, b in spans)
        return np.full((120, 160, 3), 255 if white else 0, np.uint8)

    silent = make_test_video(folder / "silent.mp4", frames=frames, width=160, height=120, fps=FPS,
                             audio=False, draw=draw)
    return replace_audio(silent, folder / "speech.wav", folder / "flash.mp4"), spans


@pytest.mark.parametrize("container", [".mp4", ".webm"])
def test_cut_silence_keeps_a_video_in_sync(engine, flashing_video, container, tmp_path):
    source, spans = flashing_video
    if container != ".mp4":
        other = tmp_path / f"flash{container}"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(source), "-c:v", "libvpx-vp9",
                        "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", str(other)], check=True)
        source = other
    out = cut.cut_silence(analyse_file(engine, source), source, min_silence_s=0.5, out_dir=tmp_path / "out")
    assert out.suffix == container
    before, after = probe(source), probe(out)
    assert after.has_audio and after.fps == before.fps and (after.width, after.height) == (160, 120)
    removed = before.duration_s - after.duration_s
    assert abs(removed - (4.0 - 4 * cut.DEFAULT_PAD_S)) < 0.3, removed
    bright, loud = bright_and_loud(out)
    # Two sentences, 0.3 s of kept pause between them: picture and sound start and stop together.
    assert len(bright) == len(loud) == 2, (bright, loud)
    for (b0, b1), (l0, l1) in zip(bright, loud):
        assert abs(b0 - l0) < 0.06 and abs(b1 - l1) < 0.1, (bright, loud)
    assert abs((bright[1][1] - bright[1][0]) - (spans[1][1] - spans[1][0])) < 0.1


def test_a_cut_in_many_parts_equals_a_cut_in_one(engine, flashing_video, tmp_path):
    # Long files are cut a group of ranges at a time, each part sought to on its own.
    source, _ = flashing_video
    analysis = analyse_file(engine, source)
    keep = cut.plan_cut(analysis, 0.5)
    assert len(keep) == 2
    whole = cut.cut_file(source, keep, tmp_path / "whole")
    parts = cut.cut_file(source, keep, tmp_path / "parts", group_size=1)
    assert abs(probe(parts).duration_s - probe(whole).duration_s) < 0.05
    assert probe(parts).frames == probe(whole).frames
    for (b0, b1), (l0, l1) in zip(*bright_and_loud(parts)):
        assert abs(b0 - l0) < 0.06 and abs(b1 - l1) < 0.1
    np.testing.assert_allclose(bright_and_loud(parts), bright_and_loud(whole), atol=0.05)


def test_bad_inputs_say_what_is_wrong(engine, tmp_path):
    # Through the tab's handler (module-level, called without a browser): the check, then the cut.
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all " * 50)
    silent_video = make_test_video(tmp_path / "mute.mp4", frames=10, width=64, height=64, audio=False)
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(16000 * 3, np.float32), 16000)
    for path, message in [(empty, "empty"), (text, "not audio"), (silent_video, "no audio track"),
                          (quiet, "No speech")]:
        with pytest.raises(UserFacingError, match=message):
            vad_tab.cut_silence(engine, str(path), 0.5)
    with pytest.raises(UserFacingError, match="min_silence_s"):
        vad_tab.cut_silence(engine, str(quiet), 0.01)
    with pytest.raises(UserFacingError, match="Upload"):
        vad_tab.detect_speech(engine, None)


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory, speech):
    """70 s at 16 kHz: 12 sentences between 2.5 s silences (three 30.72 s VAD chunks)."""
    audio, rate, spans = place(speech, [2.5] * 13)
    audio = np.concatenate([audio, np.zeros(int(70 * rate) - audio.size, np.float32)])
    import soxr
    audio = soxr.resample(audio, rate, 16000)  # at 16 kHz a resumed decode gives the same samples
    return write_wav(tmp_path_factory.mktemp("long") / "long.wav", audio, 16000), spans


def run_job(engine, kind, params, inputs):
    job = list(engine.jobs.follow(engine.jobs.submit(kind, params, inputs=inputs)))[-1]
    assert job["state"] == "done", job["error"]
    return Path(job["result"])


def test_long_detection_runs_as_a_job_and_matches_one_pass(engine, long_recording):
    path, spans = long_recording
    options = {"threshold": 0.5, "min_speech_s": 0.25, "min_silence_s": 0.3, "pad_s": 0.03}
    data = json.loads(run_job(engine, "detect_speech_long", options, {"audio": path}).read_text())
    direct = analyse_file(engine, path, max_seconds=None)
    assert data["segments"] == vad.segments_of(direct, **options)
    assert abs(data["duration_s"] - 70.0) < 0.01 and len(data["peaks"]) == len(data["probs"]) <= 2000
    assert len(data["segments"]) == len(spans) == 12
    for segment, (start, end) in zip(data["segments"], spans):
        assert abs(segment["start"] - start) < 0.2 and abs(segment["end"] - end) < 0.2


def test_long_cut_runs_as_a_job(engine, long_recording):
    path, _ = long_recording
    out = run_job(engine, "cut_silence_long", {"min_silence_s": 1.0}, {"media": path})
    # 13 silences of ~2.5 s (the last one longer); each keeps 0.15 s per speech side.
    placed_silence = 70.0 - sum(b - a for a, b in long_recording[1])
    expected = placed_silence - 24 * cut.DEFAULT_PAD_S
    assert out.suffix == ".wav"
    assert abs((70.0 - probe_audio(out).duration_s) - expected) < 0.3
    assert not (out.parent.parent / "parts").exists()  # parts are removed once joined


class InterruptedContext:
    """Enough of a JobContext for analyse_stream; its model calls fail after `fail_after` chunks."""

    def __init__(self, engine, work_dir, fail_after=None):
        self.engine, self.work_dir, self.fail_after, self.calls, self.resumed = engine, work_dir, fail_after, 0, None

    def call(self, model, fn):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        return self.engine.infer("test", model, fn)

    def resumed_from(self, position, unit="frame"):
        self.resumed = (position, unit)

    def check_cancelled(self):
        pass

    def save_checkpoint(self, **values):
        pass

    def progress(self, fraction, note=""):
        pass


def test_a_killed_vad_pass_resumes_and_gives_the_same_answer(engine, long_recording, tmp_path):
    path, _ = long_recording
    first = InterruptedContext(engine, tmp_path, fail_after=2)
    with pytest.raises(RuntimeError, match="killed"):
        vad.analyse_stream(first, path)
    second = InterruptedContext(engine, tmp_path)
    resumed = vad.analyse_stream(second, path)
    assert second.calls == 1 and second.resumed == (2 * vad.JOB_CHUNK_S, "s")  # only the third chunk was left
    whole = analyse_file(engine, path, max_seconds=None)
    assert resumed.n_samples == whole.n_samples
    np.testing.assert_allclose(resumed.probs, whole.probs, atol=1e-5)
    np.testing.assert_array_equal(resumed.peaks, whole.peaks)
