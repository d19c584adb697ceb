"""Face swap in a video as a job (tabs/face_swap/video.py): Grace Hopper's photo as the source, the
real astronaut moving across a background as the video (video_helpers.face_video), the one face
detector, and ONNX graphs with the real files' signatures brought through store.hub_files.bring
(tests/test_face_swap.py): a swapper that paints every face red, so that where a face was swapped can
be seen in the decoded frames, and the ArcFace stand-in. Real ffmpeg, a real job queue."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

import gradio as gr
from analysers import face_detector
from analysers.face_detector import FACE_DETECTOR
from app_calls import endpoint, wired
from engine import UserFacingError
from engine.media.video import probe
from store.manifest import local_path
from tabs.face_swap import job_kinds, manifest
from tabs.face_swap import model as fs
from tabs.face_swap import tab
from capability_engine import cut_then_resume, finish
from face_studio import bring, engine_with
from test_face_swap import GRACE, arcface_graph, swapper_graph
from video_helpers import decode_all, face_frame, face_video, make_test_video, smooth_background

FRAMES, CHUNK = 24, 8   # three chunks
SWAPPER, EMBEDDER = manifest.INSWAPPER.name, manifest.ARCFACE.name


def engine_on(data):
    """An engine as the app builds one, with the detector, the swapper, its embedder and the job
    kind (told the data dir, so a missing file is refused at submit), 8 frames per chunk."""
    return engine_with(data, fs.specs(data), job_kinds(data), CHUNK)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("face_swap_video")


@pytest.fixture(scope="module")
def engine(folder):
    data = folder / "data"
    bring(data, manifest.INSWAPPER, swapper_graph(folder / "graphs" / "red.onnx", "constant", colour=(1.0, 0.0, 0.0)))
    bring(data, manifest.ARCFACE, arcface_graph(folder / "graphs" / "arcface.onnx"))
    engine = engine_on(data)
    yield engine
    engine.jobs.stop()


@pytest.fixture(scope="module")
def video(folder):
    return face_video(folder / "faces.mp4", frames=FRAMES, fps=24)


@pytest.fixture(scope="module")
def centres(engine):
    """The centre of the detector's box of the astronaut's face in a few source frames."""
    frames = {i: face_frame(i) for i in (0, 11, FRAMES - 1)}
    found = engine.infer("detect", FACE_DETECTOR, lambda d: {i: fs.find_faces(d, f, None) for i, f in frames.items()})
    assert all(len(faces) == 1 for faces in found.values())
    return {i: (int((f[0]["box"][0] + f[0]["box"][2]) / 2), int((f[0]["box"][1] + f[0]["box"][3]) / 2))
            for i, f in found.items()}


def centre_colours(result, centres) -> dict[int, np.ndarray]:
    frames = decode_all(result).astype(int)
    return {i: frames[i][cy - 4:cy + 4, cx - 4:cx + 4].reshape(-1, 3).mean(axis=0) for i, (cx, cy) in centres.items()}


def test_the_job_swaps_every_frames_face_and_keeps_frames_size_and_sound(engine, video, centres):
    # Through the tab's handler, as the app calls it: the job is queued and followed to its file.
    result = wired(engine, tab.swap_faces_video, "swap the faces in the video")(GRACE, str(video), "every face", False)
    job = next(j for j in engine.jobs.list() if j["result"] == result)
    assert job["state"] == "done" and job["capability"] == "swap_faces_video" and job["model"] == SWAPPER
    before, after = probe(video), probe(result)
    assert (after.frames, after.width, after.height, after.fps) == (FRAMES, 480, 360, before.fps)
    assert after.has_audio and abs(after.duration_s - before.duration_s) <= 1 / 24
    # The source photo's face once (detector, embedder), then per chunk the detector and the swapper.
    models = job["runs"][0]["models"]
    assert models.count(EMBEDDER) == 1
    assert models.count(FACE_DETECTOR) == FRAMES // CHUNK + 1 and models.count(SWAPPER) == FRAMES // CHUNK
    for i, colour in centre_colours(result, centres).items():
        assert colour[0] > 200 and colour[1:].max() < 50, (i, colour)   # red, but for the codec
    frames_in, frames_out = decode_all(video).astype(int), decode_all(result).astype(int)
    # Far below the face (the astronaut's picture ends at row 260) only the codec touches.
    assert np.abs(frames_out[:, 280:] - frames_in[:, 280:]).mean() < 2.0


def test_colour_match_gives_the_new_face_the_old_ones_colours(engine, video, centres):
    job = finish(engine, engine.jobs.submit("swap_faces_video", {"colour_match": True},
                                            inputs={"source": GRACE, "video": video}))
    assert job["state"] == "done", job["error"]
    for i, colour in centre_colours(job["result"], centres).items():
        # A one-colour face takes the mean colour of the face it replaces, over the mask of its
        # aligned crop (hair and helmet in it too): that colour, but for the codec (measured 1-3).
        frame = face_frame(i)
        face = engine.infer("detect", FACE_DETECTOR, lambda d: fs.find_faces(d, frame, None))[0]
        crop, _ = fs.align(frame, face["landmarks"], fs.ARCFACE_128, fs.SWAP_SIZE)
        mean = cv2.cvtColor(crop.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[fs.box_mask() > 0.5].mean(axis=0)
        expected = cv2.cvtColor(mean.reshape(1, 1, 3), cv2.COLOR_LAB2RGB)[0, 0] * 255
        assert np.abs(colour - expected).max() < 8, (i, colour, expected)


def test_a_job_cut_off_after_its_first_chunk_resumes_with_identical_frames(engine, video, monkeypatch):
    params = {"which": "1"}
    whole = finish(engine, engine.jobs.submit("swap_faces_video", params, inputs={"source": GRACE, "video": video}))
    assert whole["state"] == "done", whole["error"]
    inputs = {"source": GRACE, "video": video}
    _, resumed = cut_then_resume(engine, monkeypatch,
                                 lambda: engine.jobs.submit("swap_faces_video", params, inputs=inputs))
    assert resumed["resumed_from_frame"] == CHUNK
    assert resumed["runs"][1]["models"].count(SWAPPER) == FRAMES // CHUNK - 1   # only the chunks left
    assert np.array_equal(decode_all(resumed["result"]), decode_all(whole["result"]))


def two_people(i: int, frames: int) -> np.ndarray:
    """The astronaut on the left shrinking, Grace Hopper on the right growing: the larger face at
    the start is the smaller one at the end (their square crops around the face, 220 -> 140 px and
    140 -> 220 px; the face is about 0.38 of its crop in both)."""
    frame = np.asarray(smooth_background(640, 360))
    astronaut = skimage.data.astronaut()[3:233, 109:339]
    grace = cv2.cvtColor(cv2.imread(GRACE), cv2.COLOR_BGR2RGB)[0:456, 30:486]
    t = i / (frames - 1)
    for picture, size, left in ((astronaut, round(220 - 80 * t), 20), (grace, round(140 + 80 * t), 400)):
        frame[60:60 + size, left:left + size] = cv2.resize(picture, (size, size), interpolation=cv2.INTER_AREA)
    return frame


def centred_arcface_graph(path, crops):
    """ArcFace's signature: 16 px average pools of the crop less those of the given crops' mean
    (the two people's), through a fixed random projection: the two embed apart (cosine -1, the
    centre being their midpoint), one person in two frames alike (measured 0.96 to 0.99)."""
    from onnx import TensorProto, helper, numpy_helper, save
    pools = [((c.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1).reshape(3, 7, 16, 7, 16).mean((2, 4))
             for c in crops]
    centre = np.mean(pools, axis=0).reshape(1, 147).astype(np.float32)
    weights = [numpy_helper.from_array(np.random.default_rng(7).normal(size=(147, 512)).astype(np.float32), "w"),
               numpy_helper.from_array(centre, "centre")]
    nodes = [helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Sub", ["flat", "centre"], ["centred"]),
             helper.make_node("MatMul", ["centred", "w"], ["683"])]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
                              initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def test_one_chosen_face_is_one_person_followed_through_the_video(folder):
    frames = 24
    clip = make_test_video(folder / "two.mp4", frames=frames, width=640, height=360, fps=24,
                           draw=lambda i: two_people(i, frames))
    data = folder / "people" / "data"
    start = two_people(0, frames)
    detector = face_detector.load_mtcnn("cpu")
    crops = [fs.align(start, f["landmarks"], fs.ARCFACE_112_V2, fs.EMBED_SIZE)[0]
             for f in fs.find_faces(detector, start, None)]
    bring(data, manifest.INSWAPPER, swapper_graph(folder / "graphs" / "red2.onnx", "constant", colour=(1.0, 0.0, 0.0)))
    bring(data, manifest.ARCFACE, centred_arcface_graph(folder / "graphs" / "centred.onnx", crops))
    engine = engine_on(data)
    try:
        faces = {i: fs.find_faces(detector, two_people(i, frames), None) for i in (0, frames - 1)}
        assert all(len(found) == 2 for found in faces.values())
        # The astronaut's is the larger face at the start and the smaller at the end.
        assert faces[0][0]["box"][0] < 320 and faces[frames - 1][0]["box"][0] > 320
        job = finish(engine, engine.jobs.submit("swap_faces_video", {"which": "1"},
                                                inputs={"source": GRACE, "video": clip}))
        assert job["state"] == "done", job["error"]
        out = decode_all(job["result"]).astype(int)
        for i, found in faces.items():
            for face in found:
                x1, y1, x2, y2 = (int(v) for v in face["box"][:4])
                cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
                colour = out[i][cy - 3:cy + 3, cx - 3:cx + 3].mean((0, 1))
                red = colour[0] > 200 and colour[1:].max() < 60
                # Only the astronaut, followed by identity, in the first frame and the last.
                assert red == (x1 < 320), (i, x1, colour)
        assert len(job["checkpoint"]["person"]) == 512
    finally:
        engine.jobs.stop()


def test_a_face_number_past_a_frames_faces_leaves_that_frame_alone(engine, video):
    job = finish(engine, engine.jobs.submit("swap_faces_video", {"which": "2"},
                                            inputs={"source": GRACE, "video": video}))
    assert job["state"] == "done", job["error"]
    assert SWAPPER not in job["runs"][0]["models"]   # one face a frame: nothing to swap
    assert np.abs(decode_all(job["result"]).astype(int) - decode_all(video)).mean() < 2.0   # the codec only


def test_a_video_without_faces_never_loads_the_swapper(engine, tmp_path):
    empty = make_test_video(tmp_path / "empty.mp4", frames=CHUNK, width=320, height=240, fps=24,
                            draw=lambda i: smooth_background(320, 240))
    job = finish(engine, engine.jobs.submit("swap_faces_video", {}, inputs={"source": GRACE, "video": empty}))
    assert job["state"] == "done" and probe(job["result"]).frames == CHUNK
    assert SWAPPER not in job["runs"][0]["models"]


def test_a_source_photo_without_a_face_fails_the_job_plainly(engine, video, tmp_path):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), smooth_background(320, 240))
    job = finish(engine, engine.jobs.submit("swap_faces_video", {}, inputs={"source": blank, "video": video}))
    assert job["state"] == "failed"
    assert job["error"].startswith("No face was found in the source photo") and "Traceback" not in job["error"]


def test_bad_requests_are_refused_at_submit(engine, video, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    handler = wired(engine, tab.swap_faces_video, "swap the faces in the video")
    before = len(engine.jobs.list())
    with pytest.raises(UserFacingError, match="(?i)video"):
        engine.jobs.submit("swap_faces_video", {}, inputs={"source": GRACE, "video": text})
    with pytest.raises(UserFacingError, match="source photo"):
        engine.jobs.submit("swap_faces_video", {}, inputs={"source": text, "video": video})
    with pytest.raises(gr.Error, match="Upload a source photo"):
        handler(None, str(video), "every face", False)
    with pytest.raises(gr.Error, match="Upload a video first"):
        handler(GRACE, None, "every face", False)
    with pytest.raises(gr.Error, match="Which face must be"):
        handler(GRACE, str(video), "the left one", False)
    assert len(engine.jobs.list()) == before


def test_missing_model_files_refuse_the_job_at_submit(folder, video):
    data = folder / "bare" / "data"   # no file brought here
    engine = engine_on(data)
    try:
        said = r"Face swap needs 2 files not here yet \(inswapper_128.onnx, arcface_w600k_r50.onnx\)"
        with pytest.raises(UserFacingError, match=said):
            engine.jobs.submit("swap_faces_video", {}, inputs={"source": GRACE, "video": video})
        with pytest.raises(gr.Error, match=said):
            wired(engine, tab.swap_faces_video, "swap the faces in the video")(GRACE, str(video), "every face", False)
        assert engine.jobs.list() == [] and not local_path(data, manifest.INSWAPPER).exists()
    finally:
        engine.jobs.stop()


def test_the_job_kind_groups_by_the_swapper():
    assert {k.capability: k.model for k in job_kinds()} == {"swap_faces_video": SWAPPER}


def test_the_built_tab_serves_swap_faces_video(engine, video):
    with gr.Blocks() as demo:
        tab.build(engine)
    result = endpoint(demo, "swap_faces_video")(GRACE, str(video), "every face", True)
    assert probe(result).frames == FRAMES and probe(result).has_audio
