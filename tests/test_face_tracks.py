"""Following faces between full scans (tabs/faces/tracks.py) hides every face that scanning each
frame finds: real face photos moving over a 720p frame, one slow and large, one small, fast and
entering and leaving between two scans."""
import numpy as np
import pytest
import skimage.data
from PIL import Image

from analysers import face_detector
from tabs.faces import anonymize, tracks

W, H, N = 1280, 720, 24


@pytest.fixture(scope="module")
def detector():
    return face_detector.load_mtcnn("cpu")


@pytest.fixture(scope="module")
def frames():
    big = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((300, 300)))
    small = np.asarray(Image.fromarray(skimage.data.astronaut()[:, ::-1]).resize((150, 150)))
    x = np.linspace(0, 1, W, dtype=np.float32)
    y = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    background = np.empty((H, W, 3), np.uint8)
    background[..., 0], background[..., 1], background[..., 2] = 60 + 120 * x, 60 + 120 * y, 120
    out = []
    for i in range(N):
        frame = background.copy()
        frame[200:500, 40 + 12 * i:340 + 12 * i] = big
        if 5 <= i <= 17:  # enters after the scan of frame 4, moves its own face's width per frame
            left = 1100 - 25 * (i - 5)
            frame[60:210, left:left + 150] = small
        out.append(frame)
    return np.stack(out)


def hidden_share(box, faces, width=W, height=H) -> float:
    """The share of a face box inside the regions the anonymiser hides for `faces`."""
    x1, y1, x2, y2 = box
    mask = np.zeros((height, width), bool)
    for face in faces:
        region = anonymize._region(face["box"], width, height)
        if region:
            mask[region[1]:region[3], region[0]:region[2]] = True
    return float(mask[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))].mean())


def test_following_faces_hides_every_face_a_scan_of_each_frame_finds(detector, frames, monkeypatch):
    every_frame = tracks.faces_in_frames(detector, frames, 960 * 540, every=1)
    assert [len(f) for f in every_frame] == [1] * 5 + [2] * 13 + [1] * 6   # both faces, when shown

    scans = []
    real_detect = face_detector.detect_faces
    monkeypatch.setattr(face_detector, "detect_faces", lambda d, im, **kw: scans.append(1) or real_detect(d, im, **kw))
    followed = tracks.faces_in_frames(detector, frames, 960 * 540)
    assert len(scans) == len(range(0, N, tracks.EVERY)) + 1   # frames 0, 4, ..., 20 and the last
    shares = [hidden_share(face["box"], followed[i]) for i in range(N) for face in every_frame[i]]
    assert min(shares) >= 0.99, shares
    assert [len(f) for f in followed] == [len(f) for f in every_frame]


def test_a_lost_face_costs_nothing_and_no_face_is_invented(detector):
    coffee = np.stack([skimage.data.coffee()] * 5)
    assert tracks.faces_in_frames(detector, coffee, None, every=4) == [[]] * 5
    # A face box handed over on a picture without a face: nothing is confirmed there.
    assert face_detector.refine_faces(detector, skimage.data.coffee(), [[100, 100, 200, 200]]) == []
    assert tracks.faces_in_frames(detector, coffee[:0], None) == []
