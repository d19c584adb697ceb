"""Face restoration (tabs/face_restore) end to end on a real photo: the one face detector, ffhq_512
alignment, ONNX graphs with exactly the real files' signatures (GFPGAN 1.4: input (1,3,512,512)
float32 -> (1,3,512,512); CodeFormer: plus weight (1,) float64) at the place the store puts them,
and the paste-back, through a real engine and the tab's handler. The real weights cannot be
downloaded here; the graphs are small (a 3x3 convolution) and their effect is known exactly.
They reach their place as a user's own file does: store.hub_files.bring, licence accepted, and
trusted (their sha256 is not one of the real files')."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import skimage.color
import skimage.data
from onnx import TensorProto, helper, numpy_helper, save

import gradio as gr
from analysers import face_detector
from app_calls import wired
from capability_engine import capability_engine
from face_studio import bring
from store import hub_files
from store.manifest import local_path, signature_problems
from tabs.face_restore import check, manifest
from tabs.face_restore import model as fr
from tabs.face_restore import tab

FACE = [1, 3, 512, 512]
RED = np.array([1.0, -1.0, -1.0], np.float32)     # in the model's [-1, 1] scale: (255, 0, 0)


def _conv(kernel: np.ndarray, name: str = "input") -> tuple[list, dict]:
    return [helper.make_node("Conv", [name, "W", "B"], ["y"], pads=[1, 1, 1, 1])], \
           {"W": kernel, "B": np.zeros(3, np.float32)}


def identity_kernel() -> np.ndarray:
    kernel = np.zeros((3, 3, 3, 3), np.float32)
    kernel[[0, 1, 2], [0, 1, 2], 1, 1] = 1.0    # each channel onto itself, centre tap only
    return kernel


def write_graph(path, nodes, inputs, weights, output="output", out_shape=FACE):
    graph = helper.make_graph(nodes, "restorer", inputs,
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
                              initializer=[numpy_helper.from_array(a, n) for n, a in weights.items()])
    graph_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    graph_model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(graph_model, str(path))
    return path


def gfpgan_graph(path, kernel=None, output="1288", tanh=False, in_shape=FACE):
    """GFPGAN 1.4's signature: a 3x3 convolution (identity by default), optionally then Tanh.
    The output is named as an exporter might name it: the capability reads it by position."""
    nodes, weights = _conv(identity_kernel() if kernel is None else kernel)
    if tanh:
        nodes.append(helper.make_node("Tanh", ["y"], ["t"]))
    nodes.append(helper.make_node("Identity", ["t" if tanh else "y"], [output]))
    return write_graph(path, nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                       weights, output)


def codeformer_graph(path, weight_name="weight", weight_type=TensorProto.DOUBLE):
    """CodeFormer's signature, its fidelity w really used: w * x + (1 - w) * red. w = 1 gives the
    face back, w = 0 a red face."""
    nodes, weights = _conv(identity_kernel())
    nodes += [helper.make_node("Cast", [weight_name], ["w"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["y", "w"], ["kept"]),
              helper.make_node("Sub", ["one", "w"], ["rest"]),
              helper.make_node("Mul", ["rest", "colour"], ["made"]),
              helper.make_node("Add", ["kept", "made"], ["output"])]
    weights.update(one=np.ones(1, np.float32), colour=RED.reshape(1, 3, 1, 1))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, FACE),
              helper.make_tensor_value_info(weight_name, weight_type, [1])]
    return write_graph(path, nodes, inputs, weights)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("face_restore")


@pytest.fixture(scope="module")
def engine(folder):
    data = folder / "data"
    bring(data, manifest.GFPGAN, gfpgan_graph(folder / "graphs" / "gfpgan.onnx"))
    bring(data, manifest.CODEFORMER, codeformer_graph(folder / "graphs" / "codeformer.onnx"))
    with capability_engine(folder, face_detector.specs() + fr.specs(data), []) as engine:
        yield engine


@pytest.fixture(scope="module")
def photo():
    return skimage.data.astronaut()   # 512x512, one face


@pytest.fixture(scope="module")
def face(engine, photo):
    faces = engine.infer("detect", face_detector.FACE_DETECTOR, lambda m: fr.find_faces(m, photo, None))
    assert len(faces) == 1
    return faces[0]


def paste_region(photo, face):
    """Where paste_back may write: the box the 512 crop covers in the photo."""
    _, matrix = fr.align(photo, face["landmarks"])
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    corners = np.array([[0, 0, 1], [512, 0, 1], [512, 512, 1], [0, 512, 1]], np.float64) @ inverse.T
    (x1, y1), (x2, y2) = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int)
    inside = np.zeros(photo.shape[:2], bool)
    inside[max(y1, 0):y2, max(x1, 0):x2] = True
    return inside


def test_alignment_is_the_least_squares_similarity_onto_ffhq_512(photo, face):
    import skimage.transform

    # facexlib's FFHQ-512 template in pixels (CodeFormer's face_restoration_helper, facts §5).
    assert np.abs(fr.FFHQ_512 - [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                                 [201.26117, 371.41043], [313.08905, 371.15118]]).max() < 1e-3
    crop, matrix = fr.align(photo, face["landmarks"])
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    # FaceFusion's RANSAC with a 100 px threshold keeps all five points: the fit is InsightFace's
    # least-squares similarity (Umeyama, skimage) to within float32 rounding.
    points = np.asarray(face["landmarks"], np.float64)
    umeyama = skimage.transform.SimilarityTransform.from_estimate(points, fr.FFHQ_512.astype(np.float64))
    assert np.abs(matrix - umeyama.params[:2]).max() < 1e-3
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    # Five points, four degrees of freedom: on the astronaut the eyes land within 5 px of the
    # template, the nose and the (smiling) mouth corners within 15 px, of 512.
    assert np.linalg.norm(mapped - fr.FFHQ_512, axis=1).max() < 16
    assert 2.5 < np.sqrt(abs(np.linalg.det(matrix[:, :2]))) < 3.5   # the face is enlarged ~3x


def test_the_box_mask_follows_facefusion(photo):
    mask = fr.box_mask()
    # blur 0.3 at 512: blur_amount 76, a 38 px border zeroed, then a Gaussian of sigma 19.
    assert mask[256, 256] == pytest.approx(1.0, abs=1e-3)
    assert mask[0, 256] < 0.05 and mask[256, 0] < 0.05 and mask[0, 0] < 0.01
    assert 0.3 < mask[38, 256] < 0.7    # the edge of the zeroed border is half way after the blur


def test_identity_graph_gives_the_photo_back(engine, photo, face):
    restored, found = wired(engine, tab.restore_faces, "restore the faces")(photo, "GFPGAN 1.4", 0.5)
    assert found == {"faces": 1, "model": "GFPGAN 1.4"}
    inside = paste_region(photo, face)
    diff = np.abs(restored.astype(int) - photo)
    assert diff[~inside].max() == 0                      # nothing outside the paste box is touched
    # Align (x 3 enlargement, linear) and paste back (shrink, linear) lose a little; measured on
    # the astronaut: mean 0.6, 99th percentile 4, worst pixel 34 of 255 inside the box.
    assert diff[inside].mean() < 1.0
    assert np.percentile(diff[inside], 99) <= 8


def test_a_constant_colour_graph_changes_only_the_face(engine, photo, face):
    restored, _ = wired(engine, tab.restore_faces, "restore the faces")(photo, "CodeFormer", 0.0)
    x1, y1, x2, y2 = (int(v) for v in face["box"])
    centre = restored[(y1 + y2) // 2 - 10:(y1 + y2) // 2 + 10, (x1 + x2) // 2 - 10:(x1 + x2) // 2 + 10]
    # 80 % of the red face over the photo (FaceFusion's enhancer blend), fully inside the mask.
    original = photo[(y1 + y2) // 2 - 10:(y1 + y2) // 2 + 10, (x1 + x2) // 2 - 10:(x1 + x2) // 2 + 10]
    expected = np.round(original * (1 - fr.BLEND) + np.array([255, 0, 0]) * fr.BLEND)
    assert np.abs(centre.astype(int) - expected).max() <= 2
    inside = paste_region(photo, face)
    assert np.array_equal(restored[~inside], photo[~inside])
    changed = np.abs(restored.astype(int) - photo).max(axis=2) > 8
    assert changed[~inside].sum() == 0 and changed[inside].mean() > 0.5   # measured: 0.85


def test_codeformer_fidelity_reaches_the_graph_as_a_double(engine, photo):
    handler = wired(engine, tab.restore_faces, "restore the faces")
    kept, _ = handler(photo, "CodeFormer", 1.0)      # w = 1: the graph gives the face back
    half, _ = handler(photo, "CodeFormer", 0.5)
    made, _ = handler(photo, "CodeFormer", 0.0)
    assert np.abs(kept.astype(int) - photo).mean() < 0.2
    gaps = [np.abs(r.astype(int) - photo).mean() for r in (kept, half, made)]
    assert gaps[0] < gaps[1] < gaps[2]


def test_every_face_of_the_photo_is_restored(engine, photo):
    pair = np.concatenate([photo, photo[:, ::-1]], axis=1)     # the astronaut and her mirror image
    restored, found = wired(engine, tab.restore_faces, "restore the faces")(pair, "CodeFormer", 0.0)
    assert found["faces"] == 2
    redder = restored[..., 0].astype(int) - restored[..., 2] - (pair[..., 0].astype(int) - pair[..., 2])
    left, right = redder[:, :512], redder[:, 512:]
    assert (left > 100).sum() > 5000 and (right > 100).sum() > 5000
    assert np.abs((left > 100).sum() - (right > 100).sum()) < 0.1 * (left > 100).sum()   # the same face, mirrored


def test_gray_and_rgba_photos_come_back_rgb(engine, photo):
    handler = wired(engine, tab.restore_faces, "restore the faces")
    gray = np.asarray(skimage.color.rgb2gray(photo) * 255, np.uint8)
    restored, found = handler(gray, "GFPGAN 1.4", 0.5)
    assert restored.shape == (512, 512, 3) and found["faces"] == 1
    restored, _ = handler(np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)]), "GFPGAN 1.4", 0.5)
    assert restored.shape == photo.shape and np.abs(restored.astype(int) - photo).mean() < 0.2


def test_no_face_gets_a_plain_message(engine):
    with pytest.raises(gr.Error, match="No face was found in this photo"):
        wired(engine, tab.restore_faces, "restore the faces")(skimage.data.coffee(), "GFPGAN 1.4", 0.5)


def test_bad_requests_are_refused_clearly(photo):
    with pytest.raises(Exception, match="Upload a photo first"):
        check({}, {"image": None})
    with pytest.raises(Exception, match="Model must be one of GFPGAN 1.4, CodeFormer"):
        check({"model": "GPEN"}, {"image": photo})
    with pytest.raises(Exception, match="Fidelity must be a number from 0 to 1"):
        check({"model": "CodeFormer", "fidelity": 1.5}, {"image": photo})


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """An engine whose data dir has no restorer files (or bad ones, written by the tests)."""
    folder = tmp_path_factory.mktemp("face_restore_bare")
    with capability_engine(folder, face_detector.specs() + fr.specs(folder / "data"), []) as engine:
        yield engine


def test_a_missing_file_gets_what_to_fetch_and_where_to_put_it(bare, photo):
    path = local_path(bare.data_dir, manifest.GFPGAN)
    with pytest.raises(gr.Error, match="GFPGAN 1.4 needs the file gfpgan_1.4.onnx, which is not here yet"):
        wired(bare, tab.restore_faces, "restore the faces")(photo, "GFPGAN 1.4", 0.5)
    line, _ = tab.model_status(bare, "GFPGAN 1.4")   # the tab's line has the details
    for said in ("file missing", "gfpgan_1.4.onnx", manifest.GFPGAN.urls[0], manifest.GFPGAN.urls[1],
                 str(path), manifest.GFPGAN.sha256[0], "Apache-2.0"):
        assert said in line
    line, slider = tab.model_status(bare, "CodeFormer")
    assert "file missing" in line and str(local_path(bare.data_dir, manifest.CODEFORMER)) in line
    assert slider["visible"] is True


def test_a_file_with_another_signature_is_refused_plainly(bare, photo):
    # A CodeFormer export that takes its fidelity as 'w' float32 (facts §2b: such exports exist).
    # The store refuses to take them, with the plain sentences...
    codeformer = codeformer_graph(bare.data_dir / "mine" / "codeformer.onnx", weight_name="w",
                                  weight_type=TensorProto.FLOAT)
    gfpgan = gfpgan_graph(bare.data_dir / "mine" / "gfpgan.onnx", in_shape=[1, 3, 256, 256])
    with pytest.raises(Exception, match="should have an input named 'weight'"):
        bring(bare.data_dir, manifest.CODEFORMER, codeformer)
    with pytest.raises(Exception, match=r"input 'input' should have shape \[1, 3, 512, 512\]; this file's is "
                                        r"\[1, 3, 256, 256\]"):
        bring(bare.data_dir, manifest.GFPGAN, gfpgan)
    # ...and a file copied into place by hand is checked before it is loaded.
    path = local_path(bare.data_dir, manifest.GFPGAN)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gfpgan.read_bytes())
    with pytest.raises(gr.Error, match=r"input 'input' should have shape \[1, 3, 512, 512\]"):
        wired(bare, tab.restore_faces, "restore the faces")(photo, "GFPGAN 1.4", 0.5)
    path.unlink()


def test_output_names_are_matched_by_position(tmp_path):
    # No source names the real files' outputs: any one name fits, the shape and type still count.
    entry = manifest.GFPGAN
    assert signature_problems(gfpgan_graph(tmp_path / "a.onnx", output="1288"), entry) == []
    bad = write_graph(tmp_path / "b.onnx", _conv(identity_kernel())[0] + [helper.make_node("Identity", ["y"], ["o"])],
                      [helper.make_tensor_value_info("input", TensorProto.FLOAT, FACE)],
                      _conv(identity_kernel())[1], "o", out_shape=[1, 3, 256, 256])
    assert signature_problems(bad, entry) == ["output 'o' should have shape [1, 3, 512, 512]; this file's is [1, 3, 256, 256]."]


def test_specs_are_heavy_onnx_models_with_their_own_function():
    specs = {s.name: s for s in fr.specs("/nowhere")}
    assert set(specs) == {"gfpgan-1.4", "codeformer"}
    assert {s.role for s in specs.values()} == {"heavy"} and {s.runtime for s in specs.values()} == {"onnxruntime"}
    assert len({s.function for s in specs.values()}) == 2
    assert specs["gfpgan-1.4"].loader.path.as_posix() == "/nowhere/hub-files/gfpgan-1.4/gfpgan_1.4.onnx"
    assert manifest.GFPGAN.min_memory > manifest.GFPGAN.size > 340 * 10**6


def test_the_built_tab_serves_restore_faces_and_says_what_is_missing(engine, bare, photo):
    from app_calls import endpoint, named

    with gr.Blocks() as demo:
        tab.build(engine)
    restored, found = endpoint(demo, "restore_faces")(photo, "GFPGAN 1.4", 0.5)
    assert found["faces"] == 1 and restored.shape == photo.shape
    line, _ = named(demo, "show_model")("CodeFormer")
    assert line == "**CodeFormer**: file in place."
    with gr.Blocks() as empty:
        tab.build(bare)
    line, _ = named(empty, "show_model")("GFPGAN 1.4")
    assert "file missing" in line and str(local_path(bare.data_dir, manifest.GFPGAN)) in line


def test_a_file_brought_through_the_tab_is_checked_then_used(folder, photo):
    """The tab's "use a file you have": licence and trust asked for, then the restorer runs."""
    data = folder / "b" / "data"
    graph = gfpgan_graph(folder / "mine" / "gfpgan.onnx")
    with capability_engine(folder / "b", face_detector.specs() + fr.specs(data), []) as engine:
        assert engine.data_dir == data
        use = wired(engine, tab.bring_model_file, "use the model file")
        with pytest.raises(gr.Error, match="not for commercial use"):
            use("GFPGAN 1.4", str(graph), False, True)
        with pytest.raises(gr.Error, match="trust"):
            use("GFPGAN 1.4", str(graph), True, False)
        assert use("GFPGAN 1.4", str(graph), True, True) == "**GFPGAN 1.4**: file in place."
        restored, found = wired(engine, tab.restore_faces, "restore the faces")(photo, "GFPGAN 1.4", 0.5)
        assert found["faces"] == 1 and graph.is_file()   # the user's own file stays where it was
        with pytest.raises(gr.Error, match="Upload the .onnx file first"):
            use("GFPGAN 1.4", None, True, True)


def test_the_download_says_plainly_when_there_is_no_network(bare, monkeypatch):
    """Where no URL answers (here: a closed local port, so the test never downloads the real
    377 MB file where there is internet), the Download button's refusal names the URLs and the
    exact path, before any job is queued; the licence is asked for first."""
    offline = dataclasses.replace(manifest.CODEFORMER, urls=("http://127.0.0.1:9/codeformer.onnx",))
    monkeypatch.setitem(fr.ENTRIES, "CodeFormer", offline)
    download = wired(bare, tab.download_model_file, "download the model file")
    with pytest.raises(gr.Error, match="not for commercial use"):
        download("CodeFormer", False)
    with pytest.raises(gr.Error) as refused:
        download("CodeFormer", True)
    message = str(refused.value)
    assert offline.urls[0] in message and str(local_path(bare.data_dir, offline)) in message
    assert bare.jobs.list() == []
