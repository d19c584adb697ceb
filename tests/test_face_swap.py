"""Face swap (tabs/face_swap) end to end on real photos: the one face detector, arcface_112_v2 and
arcface_128 alignment, ONNX graphs with exactly the real files' signatures (inswapper_128: target
(1,3,128,128) and source (1,512) float32 -> (1,3,128,128), its last initializer the 512x512 emap;
ArcFace w600k_r50: (N,3,112,112) -> (N,512)) at the place the store puts them, and the paste-back,
through a real engine and the tab's handler. The real weights cannot be downloaded here; the graphs
are small and their effect is known exactly. They reach their place as a user's own file does:
store.hub_files.bring, licence accepted, and trusted (their sha256 is not one of the real files')."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
from onnx import TensorProto, helper, numpy_helper, save

import gradio as gr
from analysers import face_align, face_detector
from app_calls import wired
from capability_engine import capability_engine
from face_studio import bring
from store import hub_files
from store.manifest import local_path, signature_problems
from tabs.face_swap import check, manifest
from tabs.face_swap import model as fs
from tabs.face_swap import tab

CROP = [1, 3, 128, 128]
GRACE = "tests/data/faces_real/portraits/grace_hopper.jpg"
RNG = np.random.default_rng(20)
# Three times an orthogonal matrix: the latent's norm is 3 before InsightFace normalises it again
# (FaceFusion does not), so the test sees which normalisation was fed.
EMAP = (np.linalg.qr(RNG.normal(size=(512, 512)))[0] * 3).astype(np.float32)
COLOUR_OF_LATENT = RNG.normal(size=(512, 3)).astype(np.float32) * 2.0


def write(path, nodes, inputs, outputs, weights):
    """weights in order: the swapper's emap must be the last initializer, as in the real file."""
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              initializer=[numpy_helper.from_array(a, n) for n, a in weights.items()])
    graph_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    graph_model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(graph_model, str(path))
    return path


def swapper_graph(path, kind="identity", colour=(0.0, 0.0, 1.0), source_shape=(1, 512), emap=EMAP):
    """inswapper_128's signature. identity: the target crop back; constant: one colour;
    latent: a colour that is sigmoid(source @ W), so the source's identity decides it."""
    weights = {"zero": np.zeros(1, np.float32)}
    if kind == "identity":
        nodes = [helper.make_node("Identity", ["target"], ["output"])]
    else:
        nodes = [helper.make_node("Mul", ["target", "zero"], ["blank"]),
                 helper.make_node("Add", ["blank", "paint"], ["output"])]
        if kind == "constant":
            weights["paint"] = np.asarray(colour, np.float32).reshape(1, 3, 1, 1)
        else:
            weights.update(w=COLOUR_OF_LATENT, shape=np.array([1, 3, 1, 1], np.int64))
            nodes[1:1] = [helper.make_node("MatMul", ["source", "w"], ["logits"]),
                          helper.make_node("Sigmoid", ["logits"], ["rgb"]),
                          helper.make_node("Reshape", ["rgb", "shape"], ["paint"])]
    weights["emap"] = emap
    return write(path, nodes,
                 [helper.make_tensor_value_info("target", TensorProto.FLOAT, CROP),
                  helper.make_tensor_value_info("source", TensorProto.FLOAT, list(source_shape))],
                 [helper.make_tensor_value_info("output", TensorProto.FLOAT, CROP)], weights)


def arcface_graph(path):
    """ArcFace's signature, input named as buffalo_l's might be ('input.1'): 16 px average pools of
    the crop (7x7x3) through a fixed random projection to 512, so faces that differ embed apart."""
    weights = {"w": RNG.normal(size=(147, 512)).astype(np.float32)}
    nodes = [helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["683"])]
    return write(path, nodes, [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
                 [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])], weights)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("face_swap")


@pytest.fixture(scope="module")
def engine(folder):
    data = folder / "data"
    bring(data, manifest.INSWAPPER, swapper_graph(folder / "graphs" / "latent.onnx", "latent"))
    bring(data, manifest.ARCFACE, arcface_graph(folder / "graphs" / "arcface.onnx"))
    with capability_engine(folder, face_detector.specs() + fs.specs(data), []) as engine:
        yield engine


@pytest.fixture(scope="module")
def photo():
    return skimage.data.astronaut()   # 512x512, one face


@pytest.fixture(scope="module")
def grace():
    return cv2.cvtColor(cv2.imread(GRACE), cv2.COLOR_BGR2RGB)   # 512x600, one face


def pipeline(engine, folder, kind, **graph):
    """fs.swap_photo with a swapper graph of this kind loaded by the spec's loader from its own data
    dir (the engine keeps its own swapper resident), the engine's detector and embedder."""
    data = folder / kind
    bring(data, manifest.INSWAPPER, swapper_graph(folder / "graphs" / f"{kind}.onnx", kind, **graph))
    swapper = fs.HubLoader(manifest.INSWAPPER, data)("cpu")

    def call(name, fn):
        return fn(swapper) if name == manifest.INSWAPPER.name else engine.infer("test", name, fn)
    return lambda source, target, which=fs.EVERY: fs.swap_photo(call, source, target, which, None)


def paste_region(photo, face):
    """Where paste_back may write: the box the 128 crop covers in the photo."""
    _, matrix = fs.align(photo, face["landmarks"], fs.ARCFACE_128, 128)
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [128, 0], [128, 128], [0, 128]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
    (x1, y1), (x2, y2) = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int)
    inside = np.zeros(photo.shape[:2], bool)
    inside[max(y1, 0):y2, max(x1, 0):x2] = True
    return inside


@pytest.fixture(scope="module")
def face(engine, photo):
    faces = engine.infer("detect", face_detector.FACE_DETECTOR, lambda m: fs.find_faces(m, photo, None))
    assert len(faces) == 1
    return faces[0]


def test_templates_are_facefusions(photo, face):
    # FaceFusion's WARP_TEMPLATE_SET (face_helper.py), normalised (facts §5).
    assert np.abs(fs.ARCFACE_128 / 128 - [[0.36167656, 0.40387734], [0.63696719, 0.40235469],
                                          [0.50019687, 0.56044219], [0.38710391, 0.72160547],
                                          [0.61507734, 0.72034453]]).max() < 1e-6
    assert np.abs(fs.ARCFACE_112_V2 / 112 - [[0.34191607, 0.46157411], [0.65653393, 0.45983393],
                                            [0.50022500, 0.64050536], [0.37097589, 0.82469196],
                                            [0.63151696, 0.82325089]]).max() < 1e-6
    crop, matrix = fs.align(photo, face["landmarks"], fs.ARCFACE_128, 128)
    assert crop.shape == (128, 128, 3)
    mapped = np.asarray(face["landmarks"]) @ matrix[:, :2].T + matrix[:, 2]
    # Five points, four degrees of freedom; measured on the astronaut: the eyes 2.4 px from the
    # template, the nose 5.4 and the (smiling) mouth corners 6.6 px, of 128.
    off = np.linalg.norm(mapped - fs.ARCFACE_128, axis=1)
    assert off[:2].max() < 4 and off.max() < 8


def test_the_box_mask_follows_facefusion():
    mask = fs.box_mask(128)
    # blur 0.3 at 128: blur_amount 19, a 9 px border zeroed, then a Gaussian of sigma 4.75.
    assert mask[64, 64] == pytest.approx(1.0, abs=1e-3)
    # At the edge only the Gaussian's tail beyond 9 px (1.9 sigma) reaches, from both sides of
    # OpenCV's mirrored border: about 2 x 3 %.
    assert 0.04 < mask[0, 64] < 0.1 and mask[0, 0] < 0.01
    assert 0.3 < mask[9, 64] < 0.7


def test_the_emap_is_the_last_initializer_and_the_latent_insightfaces(folder):
    path = swapper_graph(folder / "graphs" / "emap.onnx")
    assert np.array_equal(fs.read_emap(path), EMAP)
    swapper = fs.Swapper(None, EMAP)
    embedding = RNG.normal(size=512).astype(np.float32) * 7
    expected = (embedding / np.linalg.norm(embedding)) @ EMAP
    assert np.allclose(swapper.latent(embedding), expected / np.linalg.norm(expected), atol=1e-6)
    assert swapper.latent(embedding).shape == (1, 512)


def test_identity_swapper_gives_the_photo_back(engine, folder, photo, grace, face):
    swapped, info = pipeline(engine, folder, "identity")(grace, photo)
    assert info["faces"] == 1 and info["swapped"] == [1]
    inside = paste_region(photo, face)
    diff = np.abs(swapped.astype(int) - photo)
    assert diff[~inside].max() == 0
    # Align (shrink to 128, INTER_AREA) and paste back (enlarge, linear) lose the finest detail;
    # measured on the astronaut: mean 2.2, 99th percentile 16 of 255 inside the paste box.
    assert diff[inside].mean() < 3.0 and np.percentile(diff[inside], 99) < 24


def test_a_constant_colour_swapper_changes_only_the_face(engine, folder, photo, grace, face):
    swapped, _ = pipeline(engine, folder, "constant", colour=(0.0, 0.0, 1.0))(grace, photo)
    x1, y1, x2, y2 = (int(v) for v in face["box"])
    cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
    assert np.abs(swapped[cy - 8:cy + 8, cx - 8:cx + 8].astype(int) - [0, 0, 255]).max() <= 2   # fully blue
    inside = paste_region(photo, face)
    assert np.array_equal(swapped[~inside], photo[~inside])
    changed = np.abs(swapped.astype(int) - photo).max(axis=2) > 8
    assert changed[inside].mean() > 0.7   # measured: 0.88 (the mask's soft border is the rest)


def test_colour_match_is_reinhards_transfer_inside_the_mask(photo, face):
    crop, _ = fs.align(photo, face["landmarks"], fs.ARCFACE_128, 128)
    mask = fs.box_mask()
    inside = mask > 0.5

    def lab_stats(image):
        lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[inside]
        return lab.mean(axis=0), lab.std(axis=0)

    # A blue-tinted, flattened copy of the face: its statistics come back to the face's own.
    tinted = np.clip(crop * 0.5 + [0, 0, 110], 0, 255).astype(np.uint8)
    matched = face_align.match_colour(tinted, crop, mask)
    (mean, std), (want_mean, want_std) = lab_stats(matched), lab_stats(crop)
    # L* 0-100, a* b* about -128-127: measured within 0.5 (uint8 rounding and clipping).
    assert np.abs(mean - want_mean).max() < 1.0 and np.abs(std - want_std).max() < 1.0
    assert np.abs(lab_stats(tinted)[0] - want_mean).max() > 20   # the tint was far off
    # A one-colour face only takes the mean colour.
    flat = face_align.match_colour(np.full_like(crop, (0, 0, 255)), crop, mask)
    assert np.abs(lab_stats(flat)[0] - want_mean).max() < 1.0 and lab_stats(flat)[1].max() < 0.5


def test_colour_match_reaches_the_pasted_face(engine, photo, grace, face):
    swapped, _ = wired(engine, tab.swap_faces, "swap the faces")(grace, photo, "every face", True)
    x1, y1, x2, y2 = (int(v) for v in face["box"])
    centre = swapped[(y1 + y2) // 2 - 8:(y1 + y2) // 2 + 8, (x1 + x2) // 2 - 8:(x1 + x2) // 2 + 8].reshape(-1, 3)
    plain, _ = wired(engine, tab.swap_faces, "swap the faces")(grace, photo, "every face", False)
    # The latent graph paints one colour; matched, the face keeps the astronaut's skin tones.
    skin = photo[(y1 + y2) // 2 - 8:(y1 + y2) // 2 + 8, (x1 + x2) // 2 - 8:(x1 + x2) // 2 + 8].reshape(-1, 3)
    painted = plain[(y1 + y2) // 2, (x1 + x2) // 2]
    assert np.abs(centre.mean(0) - skin.mean(0)).max() < np.abs(painted - skin.mean(0)).max()
    assert not np.array_equal(swapped, plain)


def test_the_source_face_reaches_the_swapper(engine, photo, grace):
    handler = wired(engine, tab.swap_faces, "swap the faces")
    from_grace, info = handler(grace, photo, "every face")
    from_astronaut, _ = handler(photo, photo, "every face")
    again, _ = handler(grace, photo, "every face")
    assert info == {"faces": 1, "swapped": [1], "boxes": info["boxes"]} and len(info["boxes"]) == 1
    assert np.array_equal(from_grace, again)   # the same source gives the same face
    box = info["boxes"][0]
    centre = (slice((box[1] + box[3]) // 2 - 8, (box[1] + box[3]) // 2 + 8),
              slice((box[0] + box[2]) // 2 - 8, (box[0] + box[2]) // 2 + 8))
    colours = [r[centre].reshape(-1, 3).mean(axis=0) for r in (from_grace, from_astronaut)]
    assert np.abs(colours[0] - colours[1]).max() > 20   # two identities, two colours
    # The colour is the one InsightFace's latent gives: ArcFace's raw embedding of Grace Hopper's
    # arcface_112_v2 crop, L2-normalised, times the emap, normalised again.
    import onnxruntime

    face = engine.infer("detect", face_detector.FACE_DETECTOR, lambda m: fs.find_faces(m, grace, None))[0]
    crop, _ = fs.align(grace, face["landmarks"], fs.ARCFACE_112_V2, 112)
    arcface = onnxruntime.InferenceSession(str(local_path(engine.data_dir, manifest.ARCFACE)))
    embedding = arcface.run(None, {"input.1": ((crop - 127.5) / 127.5).astype(np.float32).transpose(2, 0, 1)[None]})[0]
    latent = (embedding / np.linalg.norm(embedding)) @ EMAP
    expected = 255 / (1 + np.exp(-(latent / np.linalg.norm(latent)) @ COLOUR_OF_LATENT))[0]
    assert np.abs(from_grace[centre].reshape(-1, 3) - expected).max() <= 1.5


def test_one_chosen_face_or_every_face(engine, photo, grace):
    small = cv2.resize(photo, (320, 320), interpolation=cv2.INTER_AREA)
    pair = np.concatenate([photo, np.pad(small, ((96, 96), (0, 0), (0, 0)), mode="edge")], axis=1)
    handler = wired(engine, tab.swap_faces, "swap the faces")
    changed = {}
    for key, which in (("every face", "every face"), ("1", "1"), ("2", 2.0)):
        swapped, info = handler(grace, pair, which)
        assert info["faces"] == 2
        moved = np.abs(swapped.astype(int) - pair).max(axis=2) > 8
        changed[key] = (moved[:, :512].sum(), moved[:, 512:].sum())
    assert info["swapped"] == [2] and info["boxes"][0][0] < 512 <= info["boxes"][1][0]   # largest first
    assert changed["1"][0] > 10000 and changed["1"][1] == 0 and changed["2"][0] == 0   # measured: 20526
    # The same face at 320/512 of the size: its swapped area scales by the square (measured: 8075).
    assert changed["2"][1] == pytest.approx(changed["1"][0] * (320 / 512) ** 2, rel=0.1)
    assert changed["every face"] == (changed["1"][0], changed["2"][1])
    with pytest.raises(gr.Error, match=r"The target photo has 2 faces: choose a face from 1 to 2"):
        handler(grace, pair, 3)


def test_no_face_gets_a_plain_message(engine, photo):
    handler = wired(engine, tab.swap_faces, "swap the faces")
    with pytest.raises(gr.Error, match="No face was found in the source photo"):
        handler(skimage.data.coffee(), photo, "every face")
    with pytest.raises(gr.Error, match="No face was found in the target photo"):
        handler(photo, skimage.data.coffee(), "every face")


def test_bad_requests_are_refused_clearly(photo):
    with pytest.raises(Exception, match="Upload a source photo"):
        check({}, {"source": None, "target": photo})
    with pytest.raises(Exception, match="Upload a target photo"):
        check({}, {"source": photo, "target": None})
    for bad in ("all", 0, 1.5, "-1"):
        with pytest.raises(Exception, match="Which face must be \"every face\" or a face's number"):
            check({"which": bad}, {"source": photo, "target": photo})
    check({"which": "Every face"}, {"source": photo, "target": photo})


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    folder = tmp_path_factory.mktemp("face_swap_bare")
    with capability_engine(folder, face_detector.specs() + fs.specs(folder / "data"), []) as engine:
        yield engine


def test_a_missing_file_gets_what_to_fetch_and_where_to_put_it(bare, photo, grace):
    said = r"Face swap needs 2 files not here yet \(inswapper_128.onnx, arcface_w600k_r50.onnx\)"
    with pytest.raises(gr.Error, match=said):
        wired(bare, tab.swap_faces, "swap the faces")(grace, photo, "every face")
    line = tab.model_status(bare)
    for entry in (manifest.INSWAPPER, manifest.ARCFACE):
        for said in (entry.file, *entry.urls, str(local_path(bare.data_dir, entry)), *entry.sha256):
            assert said in line
    assert line.count("file missing") == 2 and "not for commercial use" in line


def test_wrong_files_are_refused_plainly(bare, photo, grace, tmp_path):
    with pytest.raises(Exception, match=r"input 'source' should have shape \[1, 512\]; this file's is \[1, 256\]"):
        bring(bare.data_dir, manifest.INSWAPPER, swapper_graph(tmp_path / "a.onnx", source_shape=(1, 256)))
    # A graph that fits the signature but whose last weight is not the emap: refused when it loads.
    bring(bare.data_dir, manifest.ARCFACE, arcface_graph(tmp_path / "arcface.onnx"))
    bring(bare.data_dir, manifest.INSWAPPER, swapper_graph(tmp_path / "b.onnx", emap=np.eye(3, dtype=np.float32)))
    with pytest.raises(gr.Error, match=r"its last weight should be the 512x512 matrix .* this file's is \[3, 3\]"):
        wired(bare, tab.swap_faces, "swap the faces")(grace, photo, "every face")
    assert signature_problems(arcface_graph(tmp_path / "c.onnx"), manifest.ARCFACE) == []


def test_specs_are_heavy_onnx_models_with_their_own_function():
    specs = {s.name: s for s in fs.specs("/nowhere")}
    assert set(specs) == {"inswapper-128", "arcface-w600k-r50"}
    assert {s.runtime for s in specs.values()} == {"onnxruntime"} and len({s.function for s in specs.values()}) == 2
    assert specs["inswapper-128"].loader.path.as_posix() == "/nowhere/hub-files/inswapper-128/inswapper_128.onnx"
    assert not manifest.INSWAPPER.commercial and not manifest.ARCFACE.commercial


def test_the_built_tab_serves_swap_faces(engine, photo, grace):
    from app_calls import endpoint

    with gr.Blocks() as demo:
        tab.build(engine)
    swapped, info = endpoint(demo, "swap_faces")(grace, photo, "1")
    assert info["swapped"] == [1] and swapped.shape == photo.shape
    assert tab.model_status(engine).count("file in place") == 2


def test_the_download_says_plainly_when_there_is_no_network(bare, monkeypatch):
    """Where no URL answers (a closed local port: the test never downloads the real 555 MB file),
    the Download button's refusal names the URL and the exact path before any job is queued; the
    licence is asked for first."""
    import dataclasses

    name = tab.FILES[0]
    # Its licence reworded, so that an acceptance an earlier test recorded for it does not count.
    offline = dataclasses.replace(manifest.INSWAPPER, urls=("http://127.0.0.1:9/inswapper_128.onnx",),
                                  licence=manifest.INSWAPPER.licence + " (reworded)")
    monkeypatch.setitem(fs.ENTRIES, name, offline)
    local_path(bare.data_dir, offline).unlink(missing_ok=True)   # a file an earlier test brought
    download = wired(bare, tab.download_model_file, "download the model file")
    with pytest.raises(gr.Error, match="not for commercial use. Accept that licence"):
        download(name, False)
    with pytest.raises(gr.Error, match="no network here") as refused:
        download(name, True)
    message = str(refused.value)
    assert offline.urls[0] in message and str(local_path(bare.data_dir, offline)) in message
    assert bare.jobs.list() == []
