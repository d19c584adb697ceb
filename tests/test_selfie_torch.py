"""The selfie segmenter rebuilt in torch from the .tflite file (engine/runtimes/tflite, wrapped by
tabs/background/selfie_torch.py), eager and exported to ONNX Runtime, against LiteRT, the runtime it was made for.

LiteRT is no dependency any more: its outputs on four real photos, and its view of the graph, are
stored in tests/data/selfie_litert_reference.npz (tests/data/make_selfie_reference.py made them,
and says how to make them again). The contract: on those photos, P(person) from torch and from
ONNX Runtime is within 1e-3 (max abs) of LiteRT's, and the 8-bit masks the capability makes from
them differ by at most one level. Measured: under 1e-4 (float32 summation order, XNNPACK's kernels
against torch's and ONNX Runtime's; the stored values are rounded to 8e-6). The TFLite semantics
this model does not exercise (SAME pooling, resize flags, depth multipliers, padded transposed
convolutions) are checked on tiny graphs against numpy transcriptions of TFLite's reference kernels.
"""
import numpy as np
import pytest
import torch

from tabs.background import model as bg
from engine.runtimes.tflite import (Model, Operator, Tensor, TFLiteFormatError, TFLiteGraph, UnsupportedGraph,
                                    read_model)
from tabs.background import selfie_torch as st
from tests.data.make_selfie_reference import photos, read_reference, sha256

TOLERANCE = 1e-3  # max abs difference of P(person), 0..1

PHOTOS = photos()


@pytest.fixture(scope="module")
def reference():
    return read_reference()


@pytest.fixture(scope="module")
def torch_segmenter():
    return st.load("cpu", bg.model_path())


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    # A fresh cache: the export itself is under test, not a file some earlier run left.
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def onnx_segmenter(compile_cache):
    segmenter = bg.load("cpu", "onnx", compile_cache)
    assert segmenter.net.info.exported, segmenter.net.info
    return segmenter


@pytest.fixture(params=["torch", "onnxruntime"])
def segmenter(request, torch_segmenter, onnx_segmenter):
    chosen = torch_segmenter if request.param == "torch" else onnx_segmenter
    assert chosen.runtime == request.param, getattr(chosen.net, "info", None)
    return chosen


def model_input(name, reference):
    """The photo's model input, checked to be the one LiteRT was given when the reference was made
    (else a failure below would blame the net for a change in the preprocessing)."""
    x = bg.model_input(PHOTOS[name])
    assert sha256(x) == reference["input_sha256"][name], (
        f"{name}: tabs.background.model.model_input changed; run tests/data/make_selfie_reference.py "
        "where LiteRT is installed")
    return x


# ------------------------------------------------------------------------- the reader

def test_the_reader_sees_the_graph_litert_saw(reference):
    """The reader's operators, tensors and constants against LiteRT's interpreter on the same file
    (stored: operator names and tensor indices, tensor names and shapes, each constant's dtype and
    the SHA-256 of its bytes)."""
    path = bg.model_path()
    assert sha256(path.read_bytes()) == reference["model_sha256"], "not the .tflite the reference was made from"
    graph, model = reference["graph"], read_model(path)
    assert [[op.name, op.inputs, op.outputs] for op in model.operators] == graph["operators"]
    assert model.inputs == graph["inputs"] and model.outputs == graph["outputs"]
    assert [[t.name, list(t.shape)] for t in model.tensors] == graph["tensors"]
    ours = {str(t.index): [str(t.data.dtype), sha256(t.data)] for t in model.tensors if t.data is not None}
    assert ours == graph["constants"] and len(ours) == 113  # the float16 weights, the resize sizes
    assert set(model.op_names()) == {
        "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "RELU", "AVERAGE_POOL_2D",
        "LOGISTIC", "MUL", "ADD", "RESIZE_BILINEAR", "Convolution2DTransposeBias"}
    transpose = model.operators[-2]
    assert transpose.name == "Convolution2DTransposeBias" and not transpose.builtin
    assert transpose.custom_options == bytes.fromhex("010000000200000002000000")  # SAME, 2, 2
    resize = next(op for op in model.operators if op.name == "RESIZE_BILINEAR")
    assert resize.options["half_pixel_centers"] and not resize.options["align_corners"]


def test_the_reader_refuses_what_is_not_a_tflite_model():
    with pytest.raises(TFLiteFormatError):
        read_model(b"\x00" * 64)
    with pytest.raises(TFLiteFormatError):
        read_model(b"\x10\x00\x00\x00ONNX" + b"\x00" * 32)


# ------------------------------------------------------------------------- torch, ONNX = LiteRT

@pytest.mark.parametrize("name", list(PHOTOS))
def test_torch_and_onnx_runtime_match_litert_on_real_photos(name, segmenter, reference):
    x = model_input(name, reference)
    ours, theirs = segmenter(x), reference["probabilities"][name]
    assert ours.shape == theirs.shape == (256, 256) and ours.dtype == np.float32
    difference = float(np.abs(ours - theirs).max())
    print(f"{name}: max |{segmenter.runtime} - LiteRT| = {difference:.2e}")
    assert difference <= TOLERANCE, f"{name}: {difference}"
    # The capability's 8-bit mask at the photo's size: at most one level apart anywhere.
    height, width = PHOTOS[name].shape[:2]
    ours8 = bg.upsample_mask(ours, height, width).astype(int)
    theirs8 = bg.upsample_mask(theirs, height, width).astype(int)
    assert np.abs(ours8 - theirs8).max() <= 1


def test_the_reference_is_not_trivial(reference):
    """The comparison means something: LiteRT found a person where there is one, and its masks
    span the whole range (a saturated net would hide any difference)."""
    p = reference["probabilities"]
    assert p["astronaut"].min() < 0.01 and p["astronaut"].max() > 0.99
    assert 0.3 < (p["astronaut"] > 0.5).mean() < 0.8
    assert (p["cameraman"] > 0.5).mean() > 0.1
    # Four different answers, not one stored four times.
    assert len({round(float((v > 0.5).mean()), 3) for v in p.values()}) == 4


def test_the_segmenter_plugs_into_the_capability(segmenter, reference):
    assert (segmenter.height, segmenter.width) == (256, 256)
    image = PHOTOS["astronaut"]
    model_input("astronaut", reference)
    ours = bg.person_mask(segmenter, image)
    theirs = bg.upsample_mask(reference["probabilities"]["astronaut"], *image.shape[:2])
    assert ours.shape == theirs.shape == image.shape[:2] and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_the_onnx_model_runs_on_onnx_runtime_from_the_compile_cache(onnx_segmenter):
    info = onnx_segmenter.net.info
    assert (info.mode, info.provider, info.reason) == ("onnx", "CPUExecutionProvider", None)
    assert f"/{bg.EXPORT_KEY}-" in info.path and info.path.endswith(".onnx")


def test_prepare_pays_the_export_once(onnx_segmenter, compile_cache):
    """What set-up (tabs/warmup.py) calls: after it, a load finds the file in the cache."""
    before = sorted(compile_cache.iterdir())
    info = bg.prepare(compile_cache)
    assert (info["mode"], info["exported"], info["reason"]) == ("onnx", False, None)
    assert info["path"] == onnx_segmenter.net.info.path and sorted(compile_cache.iterdir()) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_the_loader_puts_the_net_on_the_device_it_is_given(tmp_path, reference):
    from engine.runtimes import onnx_runtime

    segmenter = bg.load("cuda:0", "onnx", tmp_path)
    assert all(b.device.type == "cuda" for b in segmenter.net.buffers())
    if onnx_runtime.cuda_works():
        assert (segmenter.runtime, segmenter.net.info.provider) == ("onnxruntime", "CUDAExecutionProvider")
    else:  # no CUDA provider: the session refuses cuda:0 and eager torch runs on it instead
        assert segmenter.runtime == "torch" and "CUDA provider" in segmenter.net.info.reason
    x = model_input("astronaut", reference)
    assert np.abs(segmenter(x) - reference["probabilities"]["astronaut"]).max() <= TOLERANCE


# ------------------------------------------------------------------------- TFLite semantics

def _graph(input_shape, ops, constants):
    """A tiny graph of reader objects: tensor 0 is the input, the last op's output the output.
    Activations are 4-D (the ops here read only their rank: their sizes follow from the input)."""
    count = 1 + max(max(op.inputs + op.outputs) for op in ops)
    tensors = [Tensor(i, f"t{i}", constants[i].shape if i in constants else (1, 1, 1, 1), np.float32,
                      constants.get(i)) for i in range(count)]
    tensors[0].shape = tuple(input_shape)
    return TFLiteGraph(Model(tensors, ops, [0], [ops[-1].outputs[0]]))


def _run(graph, x):
    with torch.inference_mode():
        return graph(torch.from_numpy(x)).numpy()


def _reference_resize(x, height, width, align_corners, half_pixel):
    """TFLite's reference ResizeBilinear (NHWC), transcribed."""
    _, in_h, in_w, _ = x.shape

    def axis(out, size):
        scale = (size - 1) / (out - 1) if align_corners and out > 1 else size / out
        v = (np.arange(out) + 0.5) * scale - 0.5 if half_pixel else np.arange(out) * scale
        low = np.maximum(np.floor(v), 0).astype(int)
        return v, low, np.minimum(np.ceil(v), size - 1).astype(int)

    iy, y0, y1 = axis(height, in_h)
    ix, x0, x1 = axis(width, in_w)
    dy, dx = (iy - y0)[:, None, None], (ix - x0)[None, :, None]
    img = x[0].astype(np.float64)
    out = (img[y0][:, x0] * (1 - dy) * (1 - dx) + img[y1][:, x0] * dy * (1 - dx)
           + img[y0][:, x1] * (1 - dy) * dx + img[y1][:, x1] * dy * dx)
    return out[None]


@pytest.mark.parametrize("align_corners,half_pixel", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("size", [(10, 14), (9, 4), (3, 3)])
def test_resize_bilinear_follows_tflite(align_corners, half_pixel, size):
    x = np.random.default_rng(0).normal(size=(1, 5, 7, 3)).astype(np.float32)
    op = Operator(0, "RESIZE_BILINEAR", [0, 1], [2], {"align_corners": align_corners,
                                                      "half_pixel_centers": half_pixel})
    graph = _graph(x.shape, [op], {1: np.array(size, dtype=np.int32)})
    np.testing.assert_allclose(_run(graph, x), _reference_resize(x, *size, align_corners, half_pixel),
                               atol=1e-5)


def _same_before(size, kernel, stride):
    """TFLite's SAME padding before the first pixel (the odd one goes after)."""
    return max(((size + stride - 1) // stride - 1) * stride + kernel - size, 0) // 2


def _windows(shape, kernel, stride):
    """Per SAME output pixel (oy, ox): the window's top-left corner in the input, maybe < 0."""
    _, h, w, _ = shape
    for oy in range((h + stride - 1) // stride):
        for ox in range((w + stride - 1) // stride):
            yield oy, ox, oy * stride - _same_before(h, kernel, stride), ox * stride - _same_before(w, kernel, stride)


def test_same_pooling_leaves_padding_out_and_depthwise_multiplies_channels():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 8, 7, 2)).astype(np.float32)  # SAME k3 s2 pads rows (0, 1), columns (1, 1)
    weight = rng.normal(size=(1, 3, 3, 4)).astype(np.float32)  # depth multiplier 2
    bias = rng.normal(size=4).astype(np.float32)
    conv = {"padding": "SAME", "stride_w": 2, "stride_h": 2, "depth_multiplier": 2,
            "fused_activation_function": "RELU6", "dilation_w_factor": 1, "dilation_h_factor": 1}
    pool = {"padding": "SAME", "stride_w": 2, "stride_h": 2, "filter_width": 3, "filter_height": 3,
            "fused_activation_function": "NONE"}
    graph = _graph(x.shape, [Operator(0, "DEPTHWISE_CONV_2D", [0, 1, 2], [3], conv),
                             Operator(1, "AVERAGE_POOL_2D", [3], [4], pool)], {1: weight, 2: bias})
    padded = np.zeros((1, 8 + 6, 7 + 6, 2))
    padded[:, 3:11, 3:10] = x  # zeros around, indices shifted by 3
    conv_out = np.zeros((1, 4, 4, 4))
    for oy, ox, y, xx in _windows(x.shape, 3, 2):
        window = padded[0, y + 3:y + 6, xx + 3:xx + 6]  # (3, 3, 2)
        for c in range(4):  # output channel c reads input channel c // 2 (TFLite's c * m + k)
            conv_out[0, oy, ox, c] = (window[..., c // 2] * weight[0, :, :, c]).sum() + bias[c]
    conv_out = np.clip(conv_out, 0, 6)  # fused RELU6
    expected = np.zeros((1, 2, 2, 4))
    for oy, ox, y, xx in _windows(conv_out.shape, 3, 2):
        inside = conv_out[0, max(y, 0):y + 3, max(xx, 0):xx + 3]
        expected[0, oy, ox] = inside.mean(axis=(0, 1))  # the pixels inside the image only
    np.testing.assert_allclose(_run(graph, x), expected, atol=1e-5)


def test_mediapipe_transposed_convolution_crops_as_mediapipe_does():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 4, 5, 3)).astype(np.float32)
    weight = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)  # OHWI
    bias = rng.normal(size=2).astype(np.float32)
    op = Operator(0, "Convolution2DTransposeBias", [0, 1, 2], [3], builtin=False,
                  custom_options=np.array([1, 2, 2], dtype="<i4").tobytes())  # SAME, stride 2
    out = _run(_graph(x.shape, [op], {1: weight, 2: bias}), x)
    # transpose_conv_bias.cc: pad = max(0, k - (in - 1) % s - 1), out = s (in - 1) + k - pad,
    # each input pixel scattered at (in * s - pad / 2 + k).
    pad_h, pad_w = max(0, 3 - 3 % 2 - 1), max(0, 3 - 4 % 2 - 1)
    expected = np.zeros((1, 2 * 3 + 3 - pad_h, 2 * 4 + 3 - pad_w, 2)) + bias
    for iy in range(4):
        for ix in range(5):
            for ky in range(3):
                for kx in range(3):
                    oy, ox = iy * 2 - pad_h // 2 + ky, ix * 2 - pad_w // 2 + kx
                    if 0 <= oy < expected.shape[1] and 0 <= ox < expected.shape[2]:
                        expected[0, oy, ox] += weight[:, ky, kx, :] @ x[0, iy, ix]
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_an_unknown_operator_is_refused_by_name():
    with pytest.raises(UnsupportedGraph, match="SQUARED_DIFFERENCE"):
        _graph((1, 4, 4, 1), [Operator(0, "SQUARED_DIFFERENCE", [0, 1], [2])], {1: np.ones(1, np.float32)})


def test_elementwise_constants_broadcast_over_channels_and_concat_joins_channels():
    x = np.random.default_rng(3).normal(size=(1, 3, 4, 2)).astype(np.float32)
    scale = np.array([2.0, -1.0], np.float32)  # per channel, the last NHWC axis
    relu = {"fused_activation_function": "RELU"}
    graph = _graph(x.shape, [Operator(0, "ADD", [0, 0], [1], {"fused_activation_function": "NONE"}),
                             Operator(1, "MUL", [1, 2], [3], relu),
                             Operator(2, "CONCATENATION", [3, 0], [4], {"axis": 3, **relu})], {2: scale})
    expected = np.maximum(np.concatenate([np.maximum((x + x) * scale, 0), x], axis=3), 0)
    np.testing.assert_allclose(_run(graph, x), expected, atol=1e-6)
