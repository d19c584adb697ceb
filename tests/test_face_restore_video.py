"""Face restoration in a video as a job (tabs/face_restore/video.py): the real astronaut moving
across a background (video_helpers.face_video), the one face detector, and ONNX graphs with the
real files' signatures brought through store.hub_files.bring (tests/test_face_restore.py): the
identity GFPGAN graph, and the CodeFormer graph whose fidelity 0 paints the face red, so that
where a face was restored can be seen in the decoded frames. Real ffmpeg, a real job queue."""
from __future__ import annotations

import numpy as np
import pytest

import gradio as gr
from analysers.face_detector import FACE_DETECTOR
from app_calls import wired
from engine import UserFacingError
from engine.media.video import probe
from store.manifest import local_path
from tabs.face_restore import job_kinds, manifest
from tabs.face_restore import model as fr
from tabs.face_restore import tab
from capability_engine import cut_then_resume, finish
from face_studio import bring, engine_with
from test_face_restore import codeformer_graph, gfpgan_graph
from video_helpers import decode_all, face_frame, face_video, make_test_video, smooth_background

FRAMES, CHUNK = 24, 8   # three chunks


def engine_on(data):
    """An engine as the app builds one, with the detector, the two restorers and their job kinds
    (told the data dir, so a missing file is refused at submit), 8 frames per chunk."""
    return engine_with(data, fr.specs(data), job_kinds(data), CHUNK)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("face_restore_video")


@pytest.fixture(scope="module")
def engine(folder):
    data = folder / "data"
    bring(data, manifest.GFPGAN, gfpgan_graph(folder / "graphs" / "gfpgan.onnx"))
    bring(data, manifest.CODEFORMER, codeformer_graph(folder / "graphs" / "codeformer.onnx"))
    engine = engine_on(data)
    yield engine
    engine.jobs.stop()


@pytest.fixture(scope="module")
def video(folder):
    return face_video(folder / "faces.mp4", frames=FRAMES, fps=24)


@pytest.fixture(scope="module")
def boxes(engine):
    """The detector's box of the astronaut's face in a few source frames (drawn, not decoded)."""
    frames = {i: face_frame(i) for i in (0, 11, FRAMES - 1)}
    found = engine.infer("detect", FACE_DETECTOR,
                         lambda d: {i: fr.find_faces(d, f, None) for i, f in frames.items()})
    assert all(len(faces) == 1 for faces in found.values())
    return {i: [int(round(v)) for v in faces[0]["box"]] for i, faces in found.items()}


def face_gap(result, source, boxes) -> float:
    """Mean absolute difference between result and source frames inside the face boxes."""
    out, before = decode_all(result).astype(int), decode_all(source)
    return float(np.mean([np.abs(out[i, y1:y2, x1:x2] - before[i, y1:y2, x1:x2]).mean()
                          for i, (x1, y1, x2, y2) in boxes.items()]))


def test_the_job_restores_every_frames_face_and_keeps_frames_size_and_sound(engine, video, boxes):
    # Through the tab's handler, as the app calls it: the job is queued and followed to its file.
    result = wired(engine, tab.restore_faces_video, "restore the faces in the video")(str(video), "CodeFormer", 0.0)
    job = next(j for j in engine.jobs.list() if j["result"] == result)
    assert job["state"] == "done"
    assert job["capability"] == "restore_faces_video:codeformer" and job["model"] == "codeformer"
    before, after = probe(video), probe(result)
    assert (after.frames, after.width, after.height, after.fps) == (FRAMES, 480, 360, before.fps)
    assert after.has_audio and abs(after.duration_s - before.duration_s) <= 1 / 24
    # The detector, then the restorer, leased once per chunk.
    models = job["runs"][0]["models"]
    assert models.count(FACE_DETECTOR) == models.count("codeformer") == FRAMES // CHUNK

    frames_in, frames_out = decode_all(video), decode_all(result)
    for i, (x1, y1, x2, y2) in boxes.items():
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        centre = np.s_[cy - 5:cy + 5, cx - 5:cx + 5]
        # w = 0: the graph gives a red face; 80 % of it over the frame (FaceFusion's blend).
        expected = np.round(frames_in[i][centre] * (1 - fr.BLEND) + np.array([255, 0, 0]) * fr.BLEND)
        assert np.abs(frames_out[i][centre].astype(int) - expected).mean() < 12, i   # the codec's share
        # Far below the face (the astronaut's picture ends at row 260) only the codec touches.
        far = np.s_[280:, :]
        assert np.abs(frames_out[i][far].astype(int) - frames_in[i][far]).mean() < 2.0


def test_a_job_cut_off_after_its_first_chunk_resumes_with_identical_frames(engine, video, boxes, monkeypatch):
    params = {"fidelity": 0.5}
    whole = finish(engine, engine.jobs.submit("restore_faces_video:codeformer", params, inputs={"video": video}))
    assert whole["state"] == "done", whole["error"]

    inputs = {"video": video}
    _, resumed = cut_then_resume(engine, monkeypatch,
                                 lambda: engine.jobs.submit("restore_faces_video:codeformer", params, inputs=inputs))
    assert resumed["resumed_from_frame"] == CHUNK
    second = resumed["runs"][1]["models"]   # only the chunks left
    assert second.count(FACE_DETECTOR) == second.count("codeformer") == FRAMES // CHUNK - 1
    assert np.array_equal(decode_all(resumed["result"]), decode_all(whole["result"]))
    # GFPGAN's graph is the identity: its faces come back but for resampling and the codec
    # (measured 3.3 of 255 inside the face boxes); CodeFormer's w = 0.5 is half way to red (47).
    gfpgan = finish(engine, engine.jobs.submit("restore_faces_video:gfpgan-1.4", {}, inputs={"video": video}))
    assert gfpgan["state"] == "done" and gfpgan["model"] == "gfpgan-1.4"
    assert face_gap(gfpgan["result"], video, boxes) < 5
    assert 35 < face_gap(whole["result"], video, boxes) < 60


def test_a_video_without_faces_never_loads_the_restorer(engine, tmp_path):
    empty = make_test_video(tmp_path / "empty.mp4", frames=CHUNK, width=320, height=240, fps=24,
                            draw=lambda i: smooth_background(320, 240))
    job = finish(engine, engine.jobs.submit("restore_faces_video:gfpgan-1.4", {}, inputs={"video": empty}))
    assert job["state"] == "done" and probe(job["result"]).frames == CHUNK
    assert job["runs"][0]["models"] == [FACE_DETECTOR]   # the 340 MB network stays on disk
    assert np.abs(decode_all(job["result"]).astype(int) - decode_all(empty)).mean() < 2.0   # the codec only


def test_bad_requests_are_refused_at_submit(engine, video, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    handler = wired(engine, tab.restore_faces_video, "restore the faces in the video")
    before = len(engine.jobs.list())
    with pytest.raises(UserFacingError, match="(?i)video") as refused:
        engine.jobs.submit("restore_faces_video:gfpgan-1.4", {}, inputs={"video": text})
    assert "Traceback" not in str(refused.value)
    with pytest.raises(gr.Error, match="Upload a video first"):
        handler(None, "GFPGAN 1.4", 0.5)
    with pytest.raises(gr.Error, match="Fidelity must be a number from 0 to 1"):
        handler(str(video), "CodeFormer", 2.0)
    with pytest.raises(gr.Error, match="Model must be one of GFPGAN 1.4, CodeFormer"):
        handler(str(video), "GPEN", 0.5)
    assert len(engine.jobs.list()) == before


def test_a_missing_model_file_refuses_the_job_at_submit(folder, video):
    data = folder / "bare" / "data"   # no restorer file brought here
    engine = engine_on(data)
    try:
        said = "GFPGAN 1.4 needs the file gfpgan_1.4.onnx, which is not here yet"
        with pytest.raises(UserFacingError, match=said):
            engine.jobs.submit("restore_faces_video:gfpgan-1.4", {}, inputs={"video": video})
        with pytest.raises(gr.Error, match=said):
            wired(engine, tab.restore_faces_video, "restore the faces in the video")(str(video), "GFPGAN 1.4", 0.5)
        assert engine.jobs.list() == []
        assert not local_path(data, manifest.GFPGAN).exists()
    finally:
        engine.jobs.stop()


def test_the_job_kinds_group_by_restorer():
    kinds = {k.capability: k.model for k in job_kinds()}
    assert kinds == {"restore_faces_video:gfpgan-1.4": "gfpgan-1.4", "restore_faces_video:codeformer": "codeformer"}


def test_the_built_tab_serves_restore_faces_video(engine, video):
    from app_calls import endpoint

    with gr.Blocks() as demo:
        tab.build(engine)
    result = endpoint(demo, "restore_faces_video")(str(video), "GFPGAN 1.4", 0.5)
    assert probe(result).frames == FRAMES and probe(result).has_audio
