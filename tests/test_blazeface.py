"""BlazeFace short / full range (analysers/blazeface.py) on the mediapipe wheel's .tflite files, with
MediaPipe's pre/post-processing, on real photos.

Numbers (measured, CPU): on the 100 LFW faces of skimage's lfw_subset (enlarged x4, centred on a
gray 200x200 canvas, reference box = the crop; IoU >= 0.5), short-range finds 100 and full-range
43 (full-range is made for small, distant faces: a face filling half the frame is outside what
it was trained on); the tests ask for 95 and 35. On the astronaut both put the person's eyes
within 15% of the inter-ocular distance of MTCNN's eye landmarks (measured: short 5.4 px,
full 2.8 px of a 42 px inter-ocular distance)."""
import numpy as np
import pytest
import skimage.data
from PIL import Image

from analysers import blazeface
from analysers.blazeface import FULL, SHORT, decode, load_blazeface, ssd_anchors, weighted_nms
from analysers.face_detector import detect_faces, load_mtcnn

VARIANTS = (SHORT, FULL)
EYE_TOLERANCE = 0.15  # of MTCNN's inter-ocular distance
LFW_FOUND_AT_LEAST = {SHORT: 95, FULL: 35}  # measured 100 and 43 of 100


@pytest.fixture(scope="module")
def detectors():
    return {v: load_blazeface(v, "cpu", accelerate=None) for v in VARIANTS}


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union


def test_anchors_are_mediapipes_grids():
    short, full = ssd_anchors(SHORT), ssd_anchors(FULL)
    assert short.shape == (896, 2) and full.shape == (2304, 2)  # the graphs' num_boxes
    # Stride 8: a 16x16 grid, 2 anchors a cell (aspect 1.0 + the interpolated one).
    np.testing.assert_allclose(short[:2], [[1 / 32, 1 / 32]] * 2)
    np.testing.assert_allclose(short[2], [3 / 32, 1 / 32])
    # Three stride-16 layers share one 8x8 grid: 6 anchors a cell, from index 512 on.
    np.testing.assert_allclose(short[512:518], [[1 / 16, 1 / 16]] * 6)
    np.testing.assert_allclose(short[-1], [15 / 16, 15 / 16])
    # Full range: stride 4, a 48x48 grid, one anchor a cell, row by row.
    np.testing.assert_allclose(full[[0, 1, 48]], [[1 / 96, 1 / 96], [3 / 96, 1 / 96], [1 / 96, 3 / 96]])


def test_decode_applies_offsets_scores_and_threshold():
    anchors = np.array([[0.5, 0.5], [0.25, 0.25]], np.float32)
    raw = np.zeros((2, 16), np.float32)
    raw[0, :4] = [12.8, -12.8, 64, 32]  # x +0.1, y -0.1, w 0.5, h 0.25 of the 128 px tensor
    raw[0, 4:6] = [-25.6, 0]  # first keypoint 0.2 left of the anchor
    scores = np.array([2.0, -2.0], np.float32)  # sigmoid 0.88 kept, 0.12 below 0.5 dropped
    boxes, keypoints, kept = decode(raw, scores, anchors, SHORT)
    np.testing.assert_allclose(boxes, [[0.35, 0.275, 0.85, 0.525]], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, :2], [[0.3, 0.5], [0.5, 0.5]], atol=1e-6)
    np.testing.assert_allclose(kept, [1 / (1 + np.exp(-2.0))], rtol=1e-6)


def test_weighted_nms_averages_overlapping_detections_by_score():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [2.0, 2.0, 3.0, 3.0]], np.float32)
    keypoints = np.stack([np.full((6, 2), v, np.float32) for v in (0.0, 1.0, 5.0)])
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    out_boxes, out_keypoints, out_scores = weighted_nms(boxes, keypoints, scores)
    # The 0.9 and 0.6 boxes overlap (IoU 0.82 > 0.3): one detection, their weighted mean, score 0.9.
    np.testing.assert_allclose(out_scores, [0.9, 0.7])
    np.testing.assert_allclose(out_boxes[0], [0.06, 0.0, 1.06, 1.0], atol=1e-6)
    np.testing.assert_allclose(out_keypoints[0], np.full((6, 2), 0.6), atol=1e-6)
    np.testing.assert_allclose(out_boxes[1], boxes[2])


@pytest.mark.parametrize("variant", VARIANTS)
def test_finds_the_astronaut_with_keypoints_on_her_eyes(detectors, astronaut, variant):
    theirs = detect_faces(load_mtcnn("cpu"), astronaut)
    assert len(theirs) == 1
    faces = detectors[variant](astronaut)
    assert len(faces) == 1, faces
    face, reference = faces[0], theirs[0]
    assert face["score"] > 0.85
    assert len(face["landmarks"]) == 6
    assert iou(face["box"], reference["box"]) > 0.6
    # MediaPipe's keypoint 0 is the person's right eye: the image's left, MTCNN's first landmark.
    mtcnn_eyes = np.array(reference["landmarks"][:2])
    ours = np.array(face["landmarks"][:2])
    allowed = EYE_TOLERANCE * np.linalg.norm(mtcnn_eyes[1] - mtcnn_eyes[0])
    assert np.linalg.norm(ours - mtcnn_eyes, axis=1).max() < allowed
    # Nose tip below the eyes, mouth centre below the nose; the ears outside the eyes.
    marks = np.array(face["landmarks"])
    assert marks[0, 1] < marks[2, 1] < marks[3, 1] and marks[1, 1] < marks[2, 1]
    assert marks[4, 0] < marks[0, 0] < marks[1, 0] < marks[5, 0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_letterbox_is_removed(detectors, astronaut, variant):
    """A wide and a tall image letterbox to the very tensor a black square one gives (the border
    is black, BORDER_ZERO), so their faces must be the square's, moved by the padding."""
    square = np.zeros((768, 768, 3), np.uint8)
    square[128:640, 128:640] = astronaut
    wide, tall = square[128:640], square[:, 128:640]  # 768 wide, 512 high, and the other way round
    reference = detectors[variant](square)
    assert len(reference) == 1
    for image, shift in ((wide, [0, 128]), (tall, [128, 0])):
        faces = detectors[variant](image)
        assert len(faces) == 1
        np.testing.assert_allclose(faces[0]["box"], np.array(reference[0]["box"]) - shift * 2, atol=0.05)
        np.testing.assert_allclose(faces[0]["landmarks"], np.array(reference[0]["landmarks"]) - shift, atol=0.05)


def lfw_image(crop, up=4, pad=50):
    side = crop.shape[0] * up
    face = Image.fromarray((crop * 255).round().astype(np.uint8)).resize((side, side), Image.BICUBIC)
    canvas = Image.new("L", (side + 2 * pad,) * 2, 128)
    canvas.paste(face, (pad, pad))
    return np.asarray(canvas.convert("RGB")), (pad, pad, pad + side, pad + side)


@pytest.mark.parametrize("variant", VARIANTS)
def test_finds_lfw_faces(detectors, variant):
    found = 0
    for crop in skimage.data.lfw_subset()[:100]:
        image, reference = lfw_image(crop)
        found += any(iou(face["box"], reference) >= 0.5 for face in detectors[variant](image))
    assert found >= LFW_FOUND_AT_LEAST[variant], found


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("photo", ["coffee", "rocket"])
def test_no_face_where_there_is_none(detectors, variant, photo):
    assert detectors[variant](getattr(skimage.data, photo)()) == []


def test_onnx_runtime_gives_the_eager_faces(detectors, astronaut, tmp_path):
    for variant in VARIANTS:
        fast = load_blazeface(variant, "cpu", "onnx", tmp_path)
        assert fast.runtime == "onnxruntime", fast.net.net.info.reason
        ours, eager = fast(astronaut)[0], detectors[variant](astronaut)[0]
        np.testing.assert_allclose(ours["box"], eager["box"], atol=0.1)
        np.testing.assert_allclose(ours["landmarks"], eager["landmarks"], atol=0.1)


def test_gray_and_rgba_inputs_and_tiny_images(detectors, astronaut):
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert len(detectors[SHORT](gray)) == 1 and len(detectors[SHORT](rgba)) == 1
    assert detectors[SHORT](np.zeros((1, 1, 3), np.uint8)) == []
    assert blazeface.unavailable_reason() is None
