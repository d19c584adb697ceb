"""Hiding faces in images and in videos (a real job on the queue, real ffmpeg, real detector)."""
import numpy as np
import pytest
import skimage.data

from engine import UserFacingError
from engine.media.video import probe
from video_helpers import decode_all, face_frame, face_video, sharpness
from tabs.faces import anonymize
from analysers import face_detector
from analysers.face_detector import FACE_DETECTOR
from tabs.catalog import build_engine


@pytest.fixture(scope="module")
def detector():
    return face_detector.load_mtcnn("cpu")


def hide(detector, image, mode, max_pixels):
    """hide_in_frames on one image, the detector handed over directly instead of leased."""
    return anonymize.hide_in_frames(lambda name, fn: fn(detector), image[None], mode, max_pixels)[0]


def face_box(detector, image):
    (face,) = face_detector.detect_faces(detector, image)
    x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
    return x1, y1, x2, y2


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_hiding_faces_in_an_image_changes_only_the_faces(detector, mode):
    image = skimage.data.astronaut()
    x1, y1, x2, y2 = face_box(detector, image)
    out = hide(detector, image, mode, max_pixels=None)
    assert out.shape == image.shape and out.dtype == np.uint8
    face_in, face_out = image[y1:y2, x1:x2], out[y1:y2, x1:x2]
    if mode == "blur":
        assert sharpness(face_out) < 0.35 * sharpness(face_in)
    else:  # constant blocks: most pixels equal their right-hand neighbour
        assert np.all(face_out[:, 1:] == face_out[:, :-1], axis=2).mean() > 0.8
        assert np.all(face_in[:, 1:] == face_in[:, :-1], axis=2).mean() < 0.2
    outside = np.ones(image.shape[:2], bool)
    outside[max(0, y1 - 30):y2 + 30, max(0, x1 - 30):x2 + 30] = False
    assert np.array_equal(out[outside], image[outside])
    assert face_detector.detect_faces(detector, out) == []  # the detector itself finds no face now


def test_shrinking_for_the_detector_keeps_boxes_in_input_pixels(detector):
    image = skimage.data.astronaut()
    full = hide(detector, image, "blur", max_pixels=None)
    shrunk = hide(detector, image, "blur", max_pixels=256 * 256)
    changed_full = np.argwhere(np.any(full != image, axis=2))
    changed_shrunk = np.argwhere(np.any(shrunk != image, axis=2))
    # Detected at a quarter of the pixels, the hidden region still lands on the face.
    assert np.abs(changed_full.mean(0) - changed_shrunk.mean(0)).max() < 8


def run_job(engine, video, mode="blur"):
    job_id = engine.jobs.submit("blur_faces_video", {"mode": mode, "chunk_frames": 16}, inputs={"video": video})
    return list(engine.jobs.follow(job_id))[-1]


@pytest.fixture
def engine(tmp_path):
    engine = build_engine(data_dir=tmp_path / "data", store=False, start_jobs=True)
    yield engine
    engine.jobs.stop()


def test_blur_faces_video_keeps_frames_fps_audio_and_hides_the_face(engine, detector, tmp_path):
    source = face_video(tmp_path / "faces.mp4", frames=48, fps=24)
    job = run_job(engine, source)
    assert job["state"] == "done", job["error"]
    before, after = probe(source), probe(job["result"])
    assert after.frames == before.frames == 48
    assert after.fps == before.fps
    assert abs(after.duration_s - before.duration_s) <= 1 / 24
    assert after.has_audio
    frames_in, frames_out = decode_all(source), decode_all(job["result"])
    for i in (0, 20, 47):
        x1, y1, x2, y2 = face_box(detector, face_frame(i))
        assert sharpness(frames_out[i, y1:y2, x1:x2]) < 0.4 * sharpness(frames_in[i, y1:y2, x1:x2])
        # The background, far from the face, is only touched by the codec.
        far = np.s_[280:, :]
        assert np.abs(frames_out[i][far].astype(int) - frames_in[i][far].astype(int)).mean() < 2.0
    assert job["runs"][0]["models"].count(FACE_DETECTOR) == 3  # one lease per chunk of 16


def test_a_bad_video_is_refused_clearly_and_the_next_one_runs(engine, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    for bad in (empty, text):
        with pytest.raises(UserFacingError) as refused:   # at submit: nothing waits in the queue
            run_job(engine, bad)
        assert "video" in str(refused.value).lower() and "Traceback" not in str(refused.value)
    good = run_job(engine, face_video(tmp_path / "ok.mp4", frames=8))
    assert good["state"] == "done"
