"""Lip sync in a video as a job (tabs/lip_sync/video.py): the real astronaut moving across a
background (video_helpers.face_video, 24 frames at 24 fps, a 440 Hz tone as its sound), driven by
1.5 s of real recorded speech, so the video is cycled; the one face detector; the probe graph of
tests/test_lip_sync.py (wav2lip_gan_96's exact signature, 145 MB of random weights; its output's
blue channel is the mel window's level, green and red the reference's), brought through
store.hub_files.bring. Real ffmpeg, a real job queue, 8 frames per chunk."""
from __future__ import annotations

import numpy as np
import pytest

import gradio as gr
from analysers import face_align, face_detector
from analysers.face_detector import FACE_DETECTOR
from app_calls import wired
from engine import UserFacingError
from engine.job_context import JobContext
from engine.media.audio import read_audio
from engine.media.video import probe
from tabs.lip_sync import job_kinds, manifest, mel
from tabs.lip_sync import model as ls
from tabs.lip_sync import tab
from capability_engine import cut_then_resume, finish
from face_studio import bring, engine_with
from test_lip_sync import cut_speech, wav2lip_graph
from video_helpers import decode_all, face_frame, face_video, make_test_video, smooth_background

FRAMES, CHUNK, FPS = 24, 8, 24
KIND = "lip_sync_video:wav2lip-gan-96"


def engine_on(data):
    """An engine as the app builds one: the detector, Wav2Lip and the two job kinds (told the data
    dir, so a missing file is refused at submit), 8 frames per chunk."""
    return engine_with(data, ls.specs(data), job_kinds(data), CHUNK)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("lip_sync_video")


@pytest.fixture(scope="module")
def engine(folder):
    data = folder / "data"
    bring(data, manifest.WAV2LIP_GAN, wav2lip_graph(folder / "graphs" / "probe.onnx", heavy=True))
    engine = engine_on(data)
    yield engine
    engine.jobs.stop()


@pytest.fixture(scope="module")
def video(folder):
    return face_video(folder / "faces.mp4", frames=FRAMES, fps=FPS)


@pytest.fixture(scope="module")
def speech(folder):
    return cut_speech(folder / "speech.wav", seconds=1.5)


@pytest.fixture(scope="module")
def boxes(engine):
    """The padded, smoothed box in each source frame (drawn, not decoded), as the job makes them."""
    frames = [face_frame(i) for i in range(FRAMES)]
    found = engine.infer("detect", FACE_DETECTOR, lambda d: [face_align.find_faces(d, f, None) for f in frames])
    assert all(len(faces) == 1 for faces in found)
    return ls.smooth([ls.padded_box(faces[0], 360, 480) for faces in found])


def test_the_video_is_cycled_to_the_audio_and_carries_it(engine, video, speech, boxes):
    result = wired(engine, tab.lip_sync, "sync the lips in the video")(str(video), str(speech))
    job = next(j for j in engine.jobs.list() if j["result"] == result)
    assert job["state"] == "done" and job["capability"] == KIND and job["model"] == "wav2lip-gan-96"
    samples = read_audio(speech, 16_000)
    windows = mel.melspectrogram(samples)
    starts = mel.chunk_starts(windows.shape[1], FPS)
    info = probe(result)
    # 1.5 s at 24 fps: 33 windows, so 33 frames from 24 (the video cycled), size and fps kept.
    assert (info.frames, info.width, info.height, info.fps) == (len(starts), 480, 360, FPS) and info.frames == 33
    heard = read_audio(result, 16_000)   # the speech, not the video's 440 Hz tone
    assert abs(len(heard) / 16_000 - 1.5) < 0.05
    n = min(len(heard), len(samples))
    assert np.corrcoef(heard[:n], samples[:n])[0, 1] > 0.95
    # The detector once per chunk of the 24 source frames, then Wav2Lip once per chunk of the 33.
    models = job["runs"][0]["models"]
    assert models.count(FACE_DETECTOR) == 3 and models.count("wav2lip-gan-96") == 5

    source, out = decode_all(video).astype(int), decode_all(result).astype(int)
    blue, expected = [], []
    for i, start in enumerate(starts):
        x1, y1, x2, y2 = boxes[i % FRAMES]
        cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
        blue.append(out[i, cy - 3:cy + 3, cx - 3:cx + 3, 2].mean())
        expected.append(np.floor(255 * (windows[:, start:start + 16].mean() + 4) / 8))
        outside = np.ones((360, 480), bool)
        outside[y1:y2, x1:x2] = False
        # Outside the padded box the frame is source frame i % 24, but for the codec (measured: at
        # most 2.04, the last frame, a one-frame segment of its own).
        assert np.abs(out[i][outside] - source[i % FRAMES][outside]).mean() < 3.0, i
    # Each frame's mouth shows its own window of the speech, but for the codec's share.
    assert np.abs(np.array(blue) - expected).max() < 8 and np.std(expected) > 10


def test_a_job_cut_off_after_its_first_chunk_resumes_with_identical_frames(engine, video, speech, monkeypatch):
    inputs = {"video": video, "audio": speech}
    whole = finish(engine, engine.jobs.submit(KIND, {}, inputs=inputs))
    assert whole["state"] == "done", whole["error"]
    _, resumed = cut_then_resume(engine, monkeypatch, lambda: engine.jobs.submit(KIND, {}, inputs=inputs))
    assert resumed["resumed_from_frame"] == CHUNK
    second = resumed["runs"][1]["models"]   # the faces were kept; only the chunks left are made
    assert second.count(FACE_DETECTOR) == 0 and second.count("wav2lip-gan-96") == 4
    assert np.array_equal(decode_all(resumed["result"]), decode_all(whole["result"]))


def test_a_job_cut_off_while_finding_faces_resumes_there(engine, video, speech, monkeypatch):
    calls = []
    call = JobContext.call

    def crash_on_second_face_chunk(ctx, model, fn, **kw):
        if model == FACE_DETECTOR:
            calls.append(model)
            if len(calls) == 2:
                raise RuntimeError("simulated crash")
        return call(ctx, model, fn, **kw)

    monkeypatch.setattr(JobContext, "call", crash_on_second_face_chunk)
    job_id = engine.jobs.submit(KIND, {}, inputs={"video": video, "audio": speech})
    assert finish(engine, job_id)["state"] == "failed"
    monkeypatch.setattr(JobContext, "call", call)
    engine.jobs.retry(job_id)
    resumed = finish(engine, job_id)
    assert resumed["state"] == "done", resumed["error"]
    assert resumed["runs"][1]["models"].count(FACE_DETECTOR) == 2   # the first chunk's faces were kept
    whole = next(j for j in engine.jobs.list() if j["capability"] == KIND and j["state"] == "done" and j["id"] != job_id)
    assert np.array_equal(decode_all(resumed["result"]), decode_all(whole["result"]))


def test_a_longer_video_is_cut_and_frames_without_a_face_pass_through(engine, folder):
    """48 frames: 8 of background only, then the face; driven by the 440 Hz sound of another video
    (1 s): the result is cut to that sound's windows, its first chunk untouched."""
    mixed = make_test_video(folder / "mixed.mp4", frames=48, width=480, height=360, fps=FPS,
                            draw=lambda i: smooth_background() if i < CHUNK else face_frame(i))
    tone = make_test_video(folder / "tone.mp4", frames=FPS, width=64, height=64, fps=FPS)
    job = finish(engine, engine.jobs.submit(KIND, {}, inputs={"video": mixed, "audio": tone}))
    assert job["state"] == "done", job["error"]
    count = len(mel.chunk_starts(mel.melspectrogram(read_audio(tone, 16_000)).shape[1], FPS))
    assert probe(job["result"]).frames == count and 20 <= count <= 24   # about 1 s at 24 fps (measured: 21)
    out, source = decode_all(job["result"]).astype(int), decode_all(mixed).astype(int)
    assert np.abs(out[:CHUNK] - source[:CHUNK]).mean() < 2.0   # no face: the codec only (measured: 1.34)
    assert np.abs(out[CHUNK:count] - source[CHUNK:count]).max() > 100   # the face's box redrawn
    # Wav2Lip only for the chunks with a face (2 of 3); the detector for the 21 frames used.
    models = job["runs"][0]["models"]
    assert models.count("wav2lip-gan-96") == 2 and models.count(FACE_DETECTOR) == 3


def test_bad_requests_are_refused_at_submit(engine, folder, video, speech):
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = make_test_video(folder / "empty.mp4", frames=CHUNK, width=320, height=240, fps=FPS,
                            draw=lambda i: smooth_background(320, 240))
    handler = wired(engine, tab.lip_sync, "sync the lips in the video")
    before = len(engine.jobs.list())
    with pytest.raises(UserFacingError, match="(?i)video") as refused:
        engine.jobs.submit(KIND, {}, inputs={"video": text, "audio": speech})
    assert "Traceback" not in str(refused.value)
    with pytest.raises(gr.Error, match="Upload a video first"):
        handler(None, str(speech))
    with pytest.raises(gr.Error, match="Upload the audio the lips should follow first"):
        handler(str(video), None)
    silent = make_test_video(folder / "silent.mp4", frames=CHUNK, width=64, height=64, fps=FPS, audio=False)
    with pytest.raises(gr.Error, match="This file has no audio track"):
        handler(str(video), str(silent))
    assert len(engine.jobs.list()) == before
    with pytest.raises(gr.Error, match="No face was found in this video, so there are no lips to move"):
        handler(str(empty), str(speech))


def test_a_missing_model_file_refuses_the_job_at_submit(folder, video, speech):
    engine = engine_on(folder / "bare" / "data")
    try:
        said = "Lip sync needs the file wav2lip_gan_96.onnx, which is not here yet"
        with pytest.raises(UserFacingError, match=said):
            engine.jobs.submit(KIND, {}, inputs={"video": video, "audio": speech})
        with pytest.raises(gr.Error, match=said):
            wired(engine, tab.lip_sync, "sync the lips in the video")(str(video), str(speech))
        assert engine.jobs.list() == []
    finally:
        engine.jobs.stop()


def test_the_job_kinds_group_by_model():
    assert {k.capability: k.model for k in job_kinds()} == {
        KIND: "wav2lip-gan-96", "lip_sync_photo:wav2lip-gan-96": "wav2lip-gan-96"}


def test_the_built_tab_serves_both_and_says_what_is_missing(engine, folder, video, speech):
    from app_calls import endpoint

    with gr.Blocks() as demo:
        tab.build(engine)
    result = endpoint(demo, "lip_sync")(str(video), str(speech))
    assert probe(result).frames == 33 and probe(result).has_audio
    assert {"lip_sync", "lip_sync_photo", "lip_sync_download", "lip_sync_bring"} <= {
        f.api_name for f in demo.fns.values() if f.api_name}
    bare = engine_on(folder / "bare2" / "data")
    try:
        with gr.Blocks():
            tab.build(bare)
        assert "file missing" in tab.model_status(bare)
    finally:
        bare.jobs.stop()
