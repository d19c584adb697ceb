"""MTCNN face detector on real facenet-pytorch weights (no network needed)."""

import importlib.util

import numpy as np
import pytest
import skimage.data

from analysers import face_detector
from analysers.face_detector import detect_faces, load_mtcnn
from tabs.faces.draw import draw_faces

# Where the face is in skimage's astronaut (Eileen Collins), in pixels.
ASTRONAUT_BOX = (181, 62, 268, 172)
TOLERANCE = 12


@pytest.fixture(scope="module")
def model():
    return load_mtcnn("cpu")


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def _assert_astronaut_face(faces):
    assert len(faces) == 1, faces
    face = faces[0]
    for got, want in zip(face["box"], ASTRONAUT_BOX):
        assert abs(got - want) <= TOLERANCE, face["box"]
    assert face["score"] > 0.99
    x1, y1, x2, y2 = face["box"]
    assert len(face["landmarks"]) == 5
    for x, y in face["landmarks"]:
        assert x1 <= x <= x2 and y1 <= y <= y2, face


def test_finds_the_astronaut(model, astronaut):
    faces = detect_faces(model, astronaut)
    _assert_astronaut_face(faces)
    face = faces[0]
    assert all(type(v) is float for v in face["box"] + [face["score"]])
    (lx, ly), (rx, ry) = face["landmarks"][:2]
    assert lx < rx  # left eye (in the image) comes first
    assert face["landmarks"][2][1] > max(ly, ry)  # nose below the eyes


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_no_face_in_pictures_without_people(model, name):
    assert detect_faces(model, getattr(skimage.data, name)()) == []


def test_gray_image(model, astronaut):
    gray = astronaut.mean(axis=2).astype(np.uint8)
    _assert_astronaut_face(detect_faces(model, gray))


def test_rgba_image(model, astronaut):
    alpha = np.full(astronaut.shape[:2] + (1,), 255, np.uint8)
    rgba = np.concatenate([astronaut, alpha], axis=2)
    assert detect_faces(model, rgba) == detect_faces(model, astronaut)


def test_tiny_image(model):
    assert detect_faces(model, np.zeros((5, 5, 3), np.uint8)) == []


def test_draw_faces(model, astronaut):
    faces = detect_faces(model, astronaut)
    drawn = draw_faces(astronaut, faces)
    assert drawn.shape == astronaut.shape
    assert drawn.dtype == np.uint8
    assert not np.array_equal(drawn, astronaut)
    assert np.array_equal(draw_faces(astronaut, []), astronaut)


def test_missing_package_is_explained(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"run \./setup\.sh"):
        face_detector.weights_dir()
