"""Hands (tabs/hands): MediaPipe's palm detector + hand landmarker on real photos.

Photos: tests/data/hands (four real photos of one open left hand, from OpenCV's documentation; its
README), their mirror images and quarter turns; skimage's coffee, chelsea (a cat) and astronaut (a
person, no hand in view) have no hand.

MEDIAPIPE holds the answer of MediaPipe's own graph (mediapipe.solutions.hands.Hands of the 0.10.21
wheel: static_image_mode, model_complexity 1, i.e. palm_detection_full + hand_landmark_full on
TFLite/XNNPACK), run once; its label is for a mirrored picture ("Right" for these left hands). To
print it again (_mediapipe_reference):
    cd .venv/lib/python3.11/site-packages && PYTHONPATH=$REPO:$REPO/tests python $REPO/tests/test_hands.py
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

import tabs.hands as capability
from capability_engine import capability_engine
from engine.media.video import probe
from engine.runtimes import onnx_runtime
from tabs.hands import geometry as geo
from tabs.hands import model as hm
from tabs.hands.skeleton import FINGERS, NAMES, TIPS, finger_states, gesture, palm_size
from tests.video_helpers import decode_all, make_test_video, smooth_background
from app_calls import wired

DATA = Path(__file__).parent / "data" / "hands"
PHOTOS = ["handSrc.jpg", "handDst.jpg", "Back_Projection_Theory0.jpg", "Back_Projection1_Source_Image.jpg"]
IMAGES = {name: np.asarray(Image.open(DATA / name).convert("RGB")) for name in PHOTOS}
NO_HAND = {"coffee": skimage.data.coffee(), "chelsea": skimage.data.chelsea(), "astronaut": skimage.data.astronaut()}

# MediaPipe's label and score, and its 21 landmarks (x, y in pixels), in HandLandmark order.
MEDIAPIPE = {
    "handSrc.jpg": ("Right", 0.651, [[9.2, 259.5], [48.0, 162.4], [128.5, 99.0], [196.1, 57.7], [244.1, 21.5], [268.8, 186.9], [367.9, 161.5], [429.4, 148.4], [477.3, 139.6], [281.5, 254.6], [399.7, 256.6], [473.5, 258.6], [528.4, 259.7], [270.3, 316.2], [380.0, 324.6], [447.7, 327.4], [503.2, 327.1], [239.5, 373.4], [320.4, 404.8], [372.5, 422.7], [419.6, 437.1]]),  # noqa: E501
    "handDst.jpg": ("Right", 0.902, [[27.0, 153.4], [103.7, 69.3], [225.1, 41.4], [313.6, 32.2], [378.0, 10.2], [335.8, 176.8], [449.0, 191.0], [517.1, 202.0], [571.4, 212.6], [322.2, 247.0], [442.3, 288.9], [516.6, 317.5], [574.3, 339.1], [285.6, 300.7], [394.5, 348.9], [461.5, 376.4], [519.5, 396.3], [231.0, 342.3], [307.0, 390.4], [354.6, 417.2], [399.9, 439.5]]),  # noqa: E501
    "Back_Projection_Theory0.jpg": ("Right", 0.962, [[107.0, 177.7], [75.2, 164.4], [50.6, 136.9], [31.5, 115.6], [12.3, 111.9], [83.3, 92.7], [71.9, 60.1], [66.6, 39.0], [64.2, 21.0], [104.9, 88.7], [100.8, 51.7], [100.3, 27.0], [101.5, 6.8], [124.8, 93.9], [132.0, 59.4], [137.7, 36.1], [142.9, 16.5], [143.0, 106.2], [162.2, 82.5], [175.8, 66.2], [187.3, 50.6]]),  # noqa: E501
    "Back_Projection1_Source_Image.jpg": ("Right", 0.956, [[92.5, 196.1], [69.6, 179.2], [50.1, 152.2], [29.9, 136.8], [10.5, 137.1], [86.3, 111.7], [82.7, 84.6], [81.3, 67.6], [80.8, 53.6], [106.0, 110.4], [107.3, 77.5], [108.2, 56.8], [108.9, 40.2], [124.6, 117.5], [136.8, 89.5], [144.3, 70.9], [149.2, 55.2], [139.8, 130.8], [162.0, 114.4], [176.6, 104.0], [188.5, 94.7]]),  # noqa: E501
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("hands"), capability.specs(), capability.job_kinds()) as engine:
        yield engine


@pytest.fixture(scope="module")
def model():
    return hm.load("cpu")


@pytest.fixture(scope="module")
def found(model):
    return {name: hm.find_hands(model, image) for name, image in {**IMAGES, **NO_HAND}.items()}


def skin(image: np.ndarray) -> np.ndarray:
    """Skin-coloured pixels: Cr 135..180 and Cb 85..135 (JPEG's YCbCr). Measured on these photos:
    every fingertip has Cr 142..165, Cb 107..121; the grey desks are not skin, the beige wall of
    Back_Projection_Theory0 is."""
    ycc = np.asarray(Image.fromarray(image).convert("YCbCr")).astype(int)
    return (ycc[..., 2] >= 135) & (ycc[..., 2] <= 180) & (ycc[..., 1] >= 85) & (ycc[..., 1] <= 135)


def test_the_weights_are_here_and_both_nets_run_on_onnx_runtime(model):
    assert hm.unavailable_reason() is None and capability.unavailable() is None
    (spec,) = capability.specs()
    assert (spec.name, spec.runtime, spec.device, spec.networks) == (hm.HANDS_MODEL, "onnxruntime",
                                                                     onnx_runtime.spec_device(), 2)
    assert model.runtime == "onnxruntime" and (model.detector.height, model.landmarker.height) == (192, 224)
    # SsdAnchorsCalculator's layout: 24x24 cells x 2 anchors, then 12x12 x 6 (three stride-16 layers).
    anchors = mediapipe_ssd.anchors(geo.DETECTOR_SIZE, geo.ANCHOR_STRIDES)
    assert anchors.shape == (2016, 2) and np.allclose(anchors[:2], 0.5 / 24)
    assert np.allclose(anchors[1152:1158], 0.5 / 12) and np.allclose(anchors[-1], 11.5 / 12)


@pytest.mark.parametrize("name", PHOTOS)
def test_one_hand_per_photo_where_mediapipe_finds_it(found, name):
    """Measured against MediaPipe's graph: median 0.09-0.18 px, max 0.2-1.0 px; handedness
    scores within 0.011 (float32 summation order, and our bilinear warp against OpenCV's)."""
    (hand,) = found[name]
    label, score, points = MEDIAPIPE[name]
    assert hand["presence"] > 0.99 and hand["detection"].score > 0.95
    err = np.hypot(*(hand["points"][:, :2] - np.array(points)).T)
    assert np.median(err) < 0.5 and err.max() < 1.5, err.round(2)
    # MediaPipe's "Right" assumes a mirrored picture: in these plain photos, a left hand.
    assert label == "Right" and hand["handedness"] == "left"
    assert abs(hand["handedness_score"] - score) < 0.02


@pytest.mark.parametrize("name", PHOTOS)
def test_the_fingertips_lie_on_the_hand_in_order_and_the_hand_is_open(found, name):
    image = IMAGES[name]
    (hand,) = found[name]
    p = hand["points"][:, :2]
    mask = skin(image)
    height, width = mask.shape
    beyond_on_desk = 0
    for tip in TIPS:
        # Just inside the tip (15% toward the last joint): skin; 0.6 of that bone past it: mostly desk.
        x, y = np.round(p[tip] + 0.15 * (p[tip - 1] - p[tip])).astype(int)
        assert mask[y, x], (NAMES[tip], x, y)
        x, y = np.round(p[tip] + 0.6 * (p[tip] - p[tip - 1])).astype(int)
        beyond_on_desk += bool(0 <= x < width and 0 <= y < height and not mask[y, x])
    # Back_Projection_Theory0's beige wall passes the skin test: there only the tips are checked.
    assert beyond_on_desk >= (0 if name == "Back_Projection_Theory0.jpg" else 3), beyond_on_desk
    # Thumb .. pinky across the hand: their tips' offsets across the wrist -> middle MCP axis rise
    # (or fall) in order, and so do the MCPs.
    axis = (p[9] - p[0]) / np.linalg.norm(p[9] - p[0])
    across = np.array([-axis[1], axis[0]])
    for chain in (TIPS, (2, 5, 9, 13, 17)):
        offsets = np.diff((p[list(chain)] - p[0]) @ across)
        assert (offsets > 0).all() or (offsets < 0).all(), offsets
    assert hand["gesture"] == "open palm" and all(hand["fingers"].values())


@pytest.mark.parametrize("name", list(NO_HAND))
def test_photos_without_a_hand_give_none(found, name):
    assert found[name] == []


@pytest.mark.parametrize("name", PHOTOS)
def test_a_mirror_image_flips_handedness_and_mirrors_the_points(model, found, name):
    """Measured: median 0.8-2.7 px (0.008-0.017 palm), max 1.9-9.2 px (0.021-0.075 palm)."""
    (hand,) = found[name]
    image = IMAGES[name]
    (mirrored,) = hm.find_hands(model, np.ascontiguousarray(image[:, ::-1]))
    assert mirrored["handedness"] == "right" and mirrored["gesture"] == "open palm"
    back = mirrored["points"][:, :2].copy()
    back[:, 0] = image.shape[1] - back[:, 0]
    err = np.hypot(*(back - hand["points"][:, :2]).T) / palm_size(hand["points"])
    assert np.median(err) < 0.025 and err.max() < 0.1, err.round(3)


def test_two_hands_side_by_side_are_both_found_and_one_hand_is_not_counted_twice(model, found):
    """A left hand beside its mirror image (a right hand): two hands, each in its half, each its
    side; and the same hand given twice to the deduplication comes out once."""
    image = IMAGES["Back_Projection_Theory0.jpg"]
    hands = hm.find_hands(model, np.concatenate([image, image[:, ::-1]], axis=1))
    assert len(hands) == 2
    left, right = sorted(hands, key=lambda h: h["points"][0, 0])
    assert (left["handedness"], right["handedness"]) == ("left", "right")
    assert left["points"][:, 0].max() < 205 and right["points"][:, 0].min() > 195
    (hand,) = found["Back_Projection_Theory0.jpg"]
    assert geo.duplicates([hand, hand]) == {1} and geo.duplicates([hand, left, right]) == {1}


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_turned_photo_gives_the_turned_hand(model, found, name, turns):
    """Quarter turns counter-clockwise. Measured: mean 0.3-2.0 px, max 0.9-5.4 px (0.020 palm)."""
    (hand,) = found[name]
    (turned,) = hm.find_hands(model, np.ascontiguousarray(np.rot90(IMAGES[name], turns)))
    want = hand["points"][:, :2].copy()
    width = IMAGES[name].shape[1]
    for _ in range(turns):   # np.rot90 moves pixel (x, y) to (y, width - 1 - x)
        want = np.stack([want[:, 1], width - 1 - want[:, 0]], axis=1)
        width = IMAGES[name].shape[0] if width == IMAGES[name].shape[1] else IMAGES[name].shape[1]
    err = np.hypot(*(turned["points"][:, :2] - want).T) / palm_size(hand["points"])
    assert np.median(err) < 0.02 and err.max() < 0.04, err.round(3)
    assert turned["handedness"] == "left" and turned["gesture"] == "open palm"


def test_onnx_runtime_matches_eager_torch_on_the_real_crops(model, found):
    """The two exported nets against TFLiteNet's torch graphs on what they see for a real photo
    (test_tflite_models.py's tolerance: 2e-5 of the output's range); the whole pipeline then
    agrees to a hundredth of a pixel."""
    eager = hm.load("cpu", "eager")
    image = IMAGES["handSrc.jpg"]
    (hand,) = found["handSrc.jpg"]
    x, _ = mediapipe_ssd.letterbox(image, geo.DETECTOR)
    crop = geo.landmark_input(image, hand["roi"])
    for net, fast, tensor in ((eager.detector, model.detector, x), (eager.landmarker, model.landmarker, crop)):
        assert fast.runtime == "onnxruntime" and net.runtime == "torch"
        for a, b in zip(net(tensor), fast(tensor)):
            assert np.abs(a - b).max() <= 2e-5 * max(1.0, np.abs(a).max())
    (slow,) = hm.find_hands(eager, image)
    assert np.abs(slow["points"] - hand["points"]).max() < 0.01


def _fold(points: np.ndarray, finger: str) -> np.ndarray:
    """The points with one finger curled into the palm: its last two joints pulled back between
    its base and the wrist (the thumb: its tip onto the index MCP)."""
    p = points.copy()
    if finger == "thumb":
        p[3] = (p[2] + p[5]) / 2
        p[4] = p[5] + 0.1 * (p[0] - p[5])
        return p
    mcp = 5 + 4 * (FINGERS.index(finger) - 1)
    p[mcp + 2] = p[mcp + 1] + 0.5 * (p[mcp] - p[mcp + 1]) + 0.2 * (p[0] - p[mcp])
    p[mcp + 3] = p[mcp] + 0.4 * (p[0] - p[mcp])
    return p


def test_the_gesture_rules_on_edited_real_landmarks(found):
    """No photo of a fist, a victory sign... ships: the rules run on the real open hand's
    landmarks with fingers curled by _fold, turned so that the thumb points up for thumbs up."""
    (hand,) = found["Back_Projection_Theory0.jpg"]
    p = hand["points"]

    def fold(*fingers):
        q = p
        for f in fingers:
            q = _fold(q, f)
        return q
    assert gesture(p) == "open palm"
    assert gesture(fold(*FINGERS)) == "fist" and not any(finger_states(fold(*FINGERS)).values())
    assert gesture(fold("thumb", "middle", "ring", "pinky")) == "pointing"
    assert gesture(fold("middle", "ring", "pinky")) == "pointing"          # the thumb either way
    assert gesture(fold("thumb", "ring", "pinky")) == "victory"
    ok = p.copy()
    ok[4] = ok[8] = (p[4] + p[8]) / 2
    assert gesture(ok) == "ok"
    thumb_only = fold("index", "middle", "ring", "pinky")
    assert gesture(thumb_only) is None       # the thumb points left here, not up
    d = thumb_only[4, :2] - thumb_only[2, :2]
    turn = np.arctan2(d[0], -d[1])            # turn the hand so that the thumb points straight up
    c, s = np.cos(turn), np.sin(turn)
    up = thumb_only.copy()
    up[:, :2] = (thumb_only[:, :2] - p[0, :2]) @ np.array([[c, -s], [s, c]])
    assert gesture(up) == "thumbs up"
    up[:, 1] *= -1                            # and pointing down is no thumbs up
    assert gesture(up) is None


def tab_function(engine, name):
    from tabs.hands import tab

    return wired(engine, getattr(tab, name), name.replace("_", " "))


def test_the_tab_answers_with_a_drawing_and_named_points_and_refuses_bad_input(engine):
    find = tab_function(engine, "find_hands")
    photo = IMAGES["handSrc.jpg"]
    for args, message in [((None,), "Upload a photo first."), ((np.zeros((0, 5, 3), np.uint8),), "The photo is empty."),
                          ((np.zeros((8, 8, 3), np.uint8),), "too small"),
                          ((photo, 2.0), "from 0.05 to 0.95"), ((photo, "x"), "not a number")]:
        with pytest.raises(gr.Error, match=message):
            find(*args)
    drawn, result = find(photo)
    assert drawn.shape == photo.shape and np.abs(drawn.astype(int) - photo).max() > 100
    (hand,) = result["hands"]
    assert [k["name"] for k in hand["keypoints"]] == NAMES and len(NAMES) == 21
    assert (NAMES[0], NAMES[1], NAMES[20]) == ("wrist", "thumb_cmc", "pinky_tip")
    assert (hand["handedness"], hand["gesture"]) == ("left", "open palm") and hand["presence"] > 0.99
    wrist = hand["keypoints"][0]
    assert abs(wrist["x"] - 9.2) < 1 and abs(wrist["y"] - 259.5) < 1
    world = {w["name"]: w for w in hand["world"]}   # metres: wrist to middle fingertip 0.1-0.25 m
    reach = np.hypot(world["wrist"]["x"] - world["middle_finger_tip"]["x"], world["wrist"]["y"] - world["middle_finger_tip"]["y"])
    assert 0.1 < reach < 0.25
    json.dumps(result)
    drawn, result = find(NO_HAND["coffee"])
    assert result == {"hands": [], "message": "No hand was found in this photo."}
    assert np.array_equal(drawn, NO_HAND["coffee"])
    with pytest.raises(gr.Error, match="Upload a video first."):
        tab_function(engine, "hands_video")(None)


# ---------------------------------------------------------------------------------- video

FRAMES, STEP = 10, 8
_HAND = np.asarray(Image.fromarray(IMAGES["handSrc.jpg"]).resize((320, 240), Image.LANCZOS))


def sliding_hand(i: int) -> np.ndarray:
    """handSrc.jpg at half size, sliding right by STEP px a frame over a smooth background."""
    frame = smooth_background(480, 360)
    frame[60:300, 20 + STEP * i:340 + STEP * i] = _HAND
    return frame


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("hands_video") / "hand.mp4", frames=FRAMES, width=480,
                           height=360, fps=24, draw=sliding_hand)


def test_the_video_job_draws_every_frame_and_writes_hands_that_follow_the_hand(engine, clip):
    job_id = engine.jobs.submit(capability.VIDEO_JOB, {"chunk_frames": 8}, inputs={"video": clip})
    job = list(engine.jobs.follow(job_id))[-1]
    assert job["state"] == "done", job["error"]
    before, after = probe(clip), probe(job["result"])
    assert (after.width, after.height, after.frames, after.fps, after.has_audio) == (480, 360, FRAMES, before.fps, True)
    assert job["runs"][0]["models"] == [hm.HANDS_MODEL] * 2     # leased once per chunk of 8 frames
    assert np.abs(decode_all(job["result"]).astype(int) - decode_all(clip)).max() > 100   # hands drawn
    from tabs.hands.video import hand_files

    as_json, as_csv = hand_files(job["result"])
    data = json.loads(Path(as_json).read_text())
    assert (data["width"], data["height"], data["fps"]) == (480, 360, 24.0)
    assert [f["frame"] for f in data["frames"]] == list(range(FRAMES))
    # The index fingertip, at (477.3, 139.6) in the photo, is at half that in the copy.
    tips = []
    for frame in data["frames"]:
        (hand,) = frame["hands"]
        assert hand["handedness"] == "left" and hand["presence"] > 0.95
        tip = hand["keypoints"][8]
        assert tip["name"] == "index_finger_tip" and abs(tip["y"] - (60 + 139.6 / 2)) < 4
        tips.append(tip["x"])
    assert np.abs(np.array(tips) - [20 + STEP * i + 477.3 / 2 for i in range(FRAMES)]).max() < 4
    rows = Path(as_csv).read_text().splitlines()
    assert rows[0] == "frame,time_s,hand,handedness,gesture,score,presence,name,x,y,z" and len(rows) == 1 + FRAMES * 21


def test_a_video_job_with_bad_input_is_refused_at_submit(engine, tmp_path):
    not_a_video = tmp_path / "clip.mp4"
    not_a_video.write_text("not a video")
    with pytest.raises(Exception, match="(?i)video"):
        engine.jobs.submit(capability.VIDEO_JOB, {}, inputs={"video": not_a_video})
    with pytest.raises(hm.HandsInputError, match="from 0.05 to 0.95"):
        engine.jobs.submit(capability.VIDEO_JOB, {"min_score": 0}, inputs={"video": not_a_video})


def _mediapipe_reference() -> None:
    """Print MEDIAPIPE from MediaPipe's own graph, with test_pose's shims for this venv's newer
    protobuf and the absent matplotlib (run from the wheel's site-packages; the module docstring
    has the command)."""
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
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1) as hands:
        for name, image in IMAGES.items():
            h, w = image.shape[:2]
            out = hands.process(np.ascontiguousarray(image))
            c = out.multi_handedness[0].classification[0]
            marks = out.multi_hand_landmarks[0].landmark
            print(f'"{name}": ({c.label!r}, {c.score:.3f},', [[round(m.x * w, 1), round(m.y * h, 1)] for m in marks], "),")


if __name__ == "__main__":
    _mediapipe_reference()


def test_weighted_nms_ends_on_a_zero_size_box():
    from analysers import mediapipe_ssd
    boxes = np.array([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.31, 0.3]])
    points = np.zeros((3, 2, 2))
    merged = mediapipe_ssd.weighted_nms(boxes, points, np.array([0.9, 0.8, 0.7]), 0.3)
    assert [round(float(score), 2) for score, _, _ in merged] == [0.9, 0.8]
