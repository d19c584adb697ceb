"""Body pose (tabs/pose): MediaPipe's pose detector + pose landmarker on real photos.

Photos: skimage's astronaut (upper body, facing the camera), camera (a man in profile behind a
tripod, head to knees in the picture), coffee (no one), and gradio's bus.png: despite its name a
61x68 cartoon bus icon, with no person. No full-length photo of several people ships in the
installed wheels, so the several-people case is the astronaut beside her mirror image (two real
people, one per half).

The reference numbers below come from MediaPipe's own graph (mediapipe.solutions.pose.Pose of the
0.10.21 wheel: static_image_mode, model_complexity 1, i.e. pose_landmark_cpu with
pose_landmark_full.tflite on TFLite/XNNPACK), run once. To print them again (_mediapipe_reference):
    cd .venv/lib/python3.11/site-packages && PYTHONPATH=$REPO:$REPO/tests python $REPO/tests/test_pose.py
"""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np

from analysers import mediapipe_ssd
import pytest
import skimage.data
from PIL import Image

import tabs.pose as capability
from capability_engine import capability_engine
from engine.media.video import probe
from engine.runtimes import onnx_runtime
from tabs.pose import geometry as geo
from tabs.pose import model as pm
from tabs.pose.skeleton import INDEX, NAMES
from tests.video_helpers import decode_all, make_test_video, smooth_background
from app_calls import wired

ASTRONAUT = skimage.data.astronaut()
CAMERA = np.repeat(skimage.data.camera()[..., None], 3, axis=2)
COFFEE = skimage.data.coffee()
BUS = np.asarray(Image.open(Path(gr.__file__).parent / "media_assets/images/bus.png").convert("RGB"))
TWO = np.concatenate([ASTRONAUT[:, ::-1], ASTRONAUT], axis=1)   # her mirror image | the astronaut

# MediaPipe's landmarks (x, y in pixels, visibility), in PoseLandmark order.
MEDIAPIPE = {
    "astronaut": [[222.7, 128.0, 1.0], [240.9, 111.3, 1.0], [248.9, 112.5, 1.0], [256.4, 113.7, 1.0], [214.5, 105.7, 1.0], [205.0, 103.3, 1.0], [196.6, 101.5, 1.0], [268.0, 122.8, 1.0], [190.4, 107.4, 1.0], [233.8, 153.9, 1.0], [205.8, 147.7, 1.0], [306.2, 256.6, 1.0], [112.7, 240.0, 1.0], [322.5, 374.9, 0.33], [64.6, 413.6, 0.76], [326.4, 461.3, 0.13], [135.2, 477.3, 0.32], [331.4, 496.0, 0.14], [158.5, 523.8, 0.27], [325.3, 485.2, 0.19], [173.4, 503.6, 0.33], [318.0, 471.2, 0.19], [170.4, 487.4, 0.34], [241.9, 501.7, 0.22], [128.3, 531.4, 0.26], [245.0, 738.6, 0.06], [129.8, 741.5, 0.02], [237.1, 918.5, 0.01], [127.3, 923.6, 0.01], [236.7, 946.0, 0.01], [121.7, 952.6, 0.01], [222.4, 984.5, 0.01], [144.1, 981.6, 0.01]],  # noqa: E501
    "camera": [[247.0, 169.6, 0.98], [250.1, 153.1, 0.98], [250.8, 152.4, 0.99], [251.5, 151.6, 0.99], [241.9, 152.7, 0.98], [236.6, 151.7, 0.98], [230.9, 150.6, 0.98], [231.0, 144.0, 0.99], [203.3, 143.4, 0.98], [236.5, 181.3, 0.99], [225.0, 181.0, 0.99], [219.6, 169.1, 1.0], [104.7, 181.8, 0.99], [300.4, 224.2, 0.7], [142.5, 302.3, 0.97], [395.1, 199.2, 0.78], [258.6, 221.2, 0.95], [410.2, 195.7, 0.71], [289.5, 205.6, 0.91], [421.8, 190.4, 0.71], [280.1, 185.5, 0.9], [381.8, 202.5, 0.73], [271.4, 190.4, 0.87], [113.4, 322.6, 0.96], [49.8, 344.0, 0.95], [236.1, 366.5, 0.16], [86.9, 467.9, 0.68], [176.2, 432.8, 0.05], [80.3, 535.9, 0.5], [153.5, 435.4, 0.1], [70.3, 532.3, 0.53], [203.9, 495.0, 0.06], [107.5, 606.4, 0.43]],  # noqa: E501
}
FACE = [INDEX[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "mouth_left", "mouth_right")]
SHOULDERS = [INDEX["left_shoulder"], INDEX["right_shoulder"]]
HIPS = [INDEX["left_hip"], INDEX["right_hip"]]
ANKLES = [INDEX["left_ankle"], INDEX["right_ankle"]]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("pose"), capability.specs(), capability.job_kinds()) as engine:
        yield engine


@pytest.fixture(scope="module")
def poses(engine):
    """Each photo's poses, found through the engine as the Photo tab finds them."""
    def find(image, min_score=geo.MIN_SCORE):
        return engine.infer("body_pose", pm.POSE_MODEL, lambda model: pm.find_poses(model, image, min_score))
    return {name: find(image) for name, image in
            {"astronaut": ASTRONAUT, "camera": CAMERA, "coffee": COFFEE, "bus": BUS, "two": TWO}.items()}


def test_the_weights_are_here_and_both_nets_run_on_onnx_runtime():
    assert pm.unavailable_reason() is None and capability.unavailable() is None
    (spec,) = capability.specs()
    assert (spec.name, spec.runtime, spec.device, spec.networks) == (pm.POSE_MODEL, "onnxruntime",
                                                                     onnx_runtime.spec_device(), 2)
    model = pm.load("cpu")
    assert model.runtime == "onnxruntime"
    assert (model.detector.height, model.landmarker.height) == (224, 256)
    # SsdAnchorsCalculator's layout: 28x28 cells x 2, 14x14 x 2, then 7x7 x 6 (three stride-32 layers).
    anchors = mediapipe_ssd.anchors(geo.DETECTOR_SIZE, geo.ANCHOR_STRIDES)
    assert anchors.shape == (2254, 2)
    assert np.allclose(anchors[:2], [0.5 / 28, 0.5 / 28]) and np.allclose(anchors[1568], [0.5 / 14, 0.5 / 14])
    assert np.allclose(anchors[1960:1966], 0.5 / 7) and np.allclose(anchors[-1], 6.5 / 7)


@pytest.mark.parametrize("name, median_px, max_px", [("astronaut", 2.0, 20.0), ("camera", 4.0, 30.0)])
def test_landmarks_match_mediapipes_own_graph(poses, name, median_px, max_px):
    """Measured: astronaut median 1.1 px (max 16, a hidden hand), camera 3.0 px (max 25)."""
    (pose,) = poses[name]
    want = np.array(MEDIAPIPE[name])
    err = np.hypot(*(pose["points"][:, :2] - want[:, :2]).T)
    assert np.median(err) < median_px and err.max() < max_px, err.round(1)
    assert np.abs(pose["points"][:, 3] - want[:, 2]).max() < 0.1


def test_the_astronaut_shows_her_face_and_shoulders_not_her_legs(poses):
    (pose,) = poses["astronaut"]
    points = pose["points"]
    x1, y1, x2, y2 = pose["detection"].box     # the detector's box is around the face
    for i in FACE:
        assert points[i, 3] > 0.95 and points[i, 4] > 0.9, NAMES[i]
        assert x1 - 20 < points[i, 0] < x2 + 20 and y1 - 40 < points[i, 1] < y2, NAMES[i]
    assert all(points[i, 3] > 0.95 for i in SHOULDERS)
    assert all(points[i, 3] < 0.35 for i in HIPS) and all(points[i, 3] < 0.05 for i in ANKLES)
    assert all(points[i, 1] > 512 for i in ANKLES)   # guessed below the picture
    # She faces the camera: her left side is on the picture's right.
    for side in ("eye", "ear", "shoulder"):
        assert points[INDEX[f"left_{side}"], 0] > points[INDEX[f"right_{side}"], 0] + 30, side
    assert points[INDEX["nose"], 1] < points[INDEX["mouth_left"], 1] < points[INDEX["left_shoulder"], 1]


def test_the_cameraman_is_found_standing_with_his_ankles_out_of_the_picture(poses):
    (pose,) = poses["camera"]
    points = pose["points"]
    head = points[FACE, 1].max()
    assert head < points[SHOULDERS, 1].min() + 15 and points[SHOULDERS, 1].max() < points[HIPS, 1].min()
    assert all(points[i, 3] > 0.9 for i in FACE + HIPS)
    # He is in profile, looking right through the camera: his face right of his back.
    assert points[INDEX["nose"], 0] > points[INDEX["right_shoulder"], 0] + 100
    for i in ANKLES:  # below his knees the picture ends: each ankle is outside it or judged hidden
        assert points[i, 1] > points[HIPS, 1].max() and (points[i, 1] > 512 or points[i, 3] < 0.5), NAMES[i]


def test_two_people_side_by_side_are_both_found(poses):
    people = sorted(poses["two"], key=lambda p: p["points"][INDEX["nose"], 0])
    assert len(people) == 2 and min(p["detection"].score for p in people) > 0.7
    for half, pose in enumerate(people):
        points = pose["points"]
        # Each person's visible points lie in their own half.
        seen = points[:, 3] > 0.9
        assert np.all((points[seen, 0] >= 512 * half - 5) & (points[seen, 0] <= 512 * (half + 1) + 5))
        assert points[INDEX["nose"], 1] < points[SHOULDERS, 1].min()
        # A mirrored person facing the camera still has her left on the right: the net goes by the body.
        assert points[INDEX["left_shoulder"], 0] > points[INDEX["right_shoulder"], 0]
    # The mirror image is found where the mirror puts her (the same face points, at 1023 - x).
    mirrored = 1023 - people[1]["points"][FACE, 0]
    gaps = np.abs(np.sort(mirrored) - np.sort(people[0]["points"][FACE, 0]))
    assert np.median(gaps) < 3 and gaps.max() < 12   # measured: 2.2 and 9.8 px (an ear)


@pytest.mark.parametrize("name", ["coffee", "bus"])
def test_a_photo_with_no_person_gives_none(poses, name):
    assert poses[name] == []


def test_eager_torch_and_onnx_runtime_agree():
    eager, onnx = pm.load("cpu", "eager"), pm.load("cpu", "onnx")
    a, b = pm.find_poses(eager, ASTRONAUT)[0], pm.find_poses(onnx, ASTRONAUT)[0]
    assert np.abs(a["points"][:, :2] - b["points"][:, :2]).max() < 0.5
    assert np.abs(a["points"][:, 3:] - b["points"][:, 3:]).max() < 0.01


def test_the_segmentation_output_covers_the_person():
    (pose,) = pm.find_poses(pm.load("cpu"), ASTRONAUT, segmentation=True)
    mask = pose["mask"]
    assert mask.shape == (512, 512)
    assert mask[150:260, 180:280].mean() > 0.9      # her face and neck
    assert mask[20:80, 430:500].mean() < 0.1        # the sky beside the rocket


def tab_function(engine, name):
    from tabs.pose import tab

    return wired(engine, getattr(tab, name), name.replace("_", " "))


def test_the_tab_answers_with_a_drawing_and_named_keypoints_and_refuses_bad_input(engine):
    body_pose = tab_function(engine, "body_pose")
    for args, message in [((None,), "Upload a photo first."), ((np.zeros((0, 5, 3), np.uint8),), "The photo is empty."),
                          ((np.zeros((8, 8, 3), np.uint8),), "too small"),
                          ((ASTRONAUT, 2.0), "from 0.05 to 0.95"), ((ASTRONAUT, "x"), "not a number")]:
        with pytest.raises(gr.Error, match=message):
            body_pose(*args)
    drawn, found = body_pose(ASTRONAUT)
    assert drawn.shape == ASTRONAUT.shape and np.abs(drawn.astype(int) - ASTRONAUT).max() > 100
    (person,) = found["people"]
    assert [k["name"] for k in person["keypoints"]] == NAMES and len(NAMES) == 33
    assert NAMES[0] == "nose" and NAMES[32] == "right_foot_index"
    nose = person["keypoints"][0]
    assert abs(nose["x"] - 222.7) < 3 and abs(nose["y"] - 128.0) < 3 and nose["visibility"] > 0.95
    world = {w["name"]: w for w in person["world"]}   # metres around the hips: shoulders ~0.3 m apart
    assert 0.2 < abs(world["left_shoulder"]["x"] - world["right_shoulder"]["x"]) < 0.6
    drawn, found = body_pose(COFFEE)
    assert found == {"people": [], "message": "No person was found in this photo."}
    assert np.array_equal(drawn, COFFEE)
    json.dumps(found)
    video = tab_function(engine, "body_pose_video")
    with pytest.raises(gr.Error, match="Upload a video first."):
        video(None)


# ---------------------------------------------------------------------------------- video

FRAMES, SIZE, STEP = 12, 300, 6
_PERSON = np.asarray(Image.fromarray(ASTRONAUT).resize((SIZE, SIZE), Image.LANCZOS))


def moving_astronaut(i: int) -> np.ndarray:
    frame = smooth_background(480, 360)
    frame[30:30 + SIZE, 20 + STEP * i:20 + STEP * i + SIZE] = _PERSON
    return frame


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("pose_video") / "astronaut.mp4", frames=FRAMES, width=480,
                           height=360, fps=24, draw=moving_astronaut)


def run_job(engine, video, chunk_frames=8):
    job_id = engine.jobs.submit(capability.VIDEO_JOB, {"chunk_frames": chunk_frames}, inputs={"video": video})
    return list(engine.jobs.follow(job_id))[-1]


def test_the_video_job_draws_every_frame_and_writes_keypoints_that_follow_the_person(engine, clip):
    job = run_job(engine, clip)
    assert job["state"] == "done", job["error"]
    before, after = probe(clip), probe(job["result"])
    assert (after.width, after.height, after.frames, after.fps, after.has_audio) == (480, 360, FRAMES, before.fps, True)
    assert job["runs"][0]["models"] == [pm.POSE_MODEL] * 2     # leased once per chunk of 8 frames
    assert np.abs(decode_all(job["result"]).astype(int) - decode_all(clip)).max() > 100   # skeletons drawn
    from tabs.pose.video import keypoint_files

    as_json, as_csv = keypoint_files(job["result"])
    data = json.loads(Path(as_json).read_text())
    assert (data["width"], data["height"], data["fps"]) == (480, 360, 24.0)
    assert [f["frame"] for f in data["frames"]] == list(range(FRAMES))
    noses = []
    for frame in data["frames"]:
        (person,) = frame["people"]
        nose = person["keypoints"][0]
        assert nose["name"] == "nose" and nose["visibility"] > 0.9
        noses.append(nose["x"])
    # The astronaut's nose, 222.7 px into the 512 photo, is 130 px into the 300 px copy.
    expected = [20 + STEP * i + 222.7 * SIZE / 512 for i in range(FRAMES)]
    assert np.abs(np.array(noses) - expected).max() < 6
    rows = Path(as_csv).read_text().splitlines()
    assert rows[0] == "frame,time_s,person,score,name,x,y,z,visibility,presence" and len(rows) == 1 + FRAMES * 33


def test_a_resumed_video_job_writes_the_same_keypoints(engine, clip, monkeypatch):
    import engine.media.video_job as video_job_module

    whole = run_job(engine, clip)
    real_write, calls = video_job_module.write_segment, []

    def crash_on_second_chunk(frames, path, fps):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_write(frames, path, fps)

    monkeypatch.setattr(video_job_module, "write_segment", crash_on_second_chunk)
    broken = run_job(engine, clip)
    assert broken["state"] == "failed" and broken["checkpoint"]["chunks_done"] == 1
    engine.jobs.retry(broken["id"])
    resumed = list(engine.jobs.follow(broken["id"]))[-1]
    assert resumed["state"] == "done" and resumed["resumed_from_frame"] == 8
    from tabs.pose.video import keypoint_files

    for a, b in zip(keypoint_files(whole["result"]), keypoint_files(resumed["result"])):
        assert Path(a).read_text() == Path(b).read_text()


def test_a_video_job_with_bad_input_is_refused_at_submit(engine, tmp_path):
    not_a_video = tmp_path / "clip.mp4"
    not_a_video.write_text("not a video")
    with pytest.raises(Exception, match="(?i)video"):
        engine.jobs.submit(capability.VIDEO_JOB, {}, inputs={"video": not_a_video})
    with pytest.raises(pm.PoseInputError, match="from 0.05 to 0.95"):
        engine.jobs.submit(capability.VIDEO_JOB, {"min_score": 0}, inputs={"video": not_a_video})


def _mediapipe_reference() -> None:
    """Print MEDIAPIPE from MediaPipe's own graph (run from the wheel's site-packages, where
    MediaPipe finds its graphs; the module docstring has the command).
    Two shims for the newer protobuf of this venv: FieldDescriptor.label is gone (is_repeated),
    MessageFactory.GetPrototype too (GetMessageClass)."""
    import pathlib
    import re
    import sys
    import types

    sys.modules.setdefault("matplotlib", types.ModuleType("matplotlib"))
    sys.modules.setdefault("matplotlib.pyplot", types.ModuleType("matplotlib.pyplot"))
    import mediapipe as mp
    import mediapipe.python.solution_base as sb
    from google.protobuf import message_factory

    source = re.sub(r"field_label = calculator_options\.DESCRIPTOR\.fields_by_name\[\s*field_name\]\.label\s*"
                    r"if field_label == descriptor\.FieldDescriptor\.LABEL_REPEATED:",
                    "if calculator_options.DESCRIPTOR.fields_by_name[field_name].is_repeated:",
                    pathlib.Path(sb.__file__).read_text())
    patched = dict(vars(sb))
    exec(compile(source, "solution_base", "exec"), patched)  # noqa: S102 - MediaPipe's own code, one line changed
    for key, value in vars(patched["SolutionBase"]).items():
        if callable(value):
            setattr(sb.SolutionBase, key, value)
    if not hasattr(message_factory.MessageFactory, "GetPrototype"):
        message_factory.MessageFactory.GetPrototype = lambda self, d: message_factory.GetMessageClass(d)
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        for name, image in (("astronaut", ASTRONAUT), ("camera", CAMERA)):
            h, w = image.shape[:2]
            marks = pose.process(np.ascontiguousarray(image)).pose_landmarks.landmark
            print(f'"{name}":', [[round(m.x * w, 1), round(m.y * h, 1), round(m.visibility, 2)] for m in marks])


if __name__ == "__main__":
    _mediapipe_reference()
