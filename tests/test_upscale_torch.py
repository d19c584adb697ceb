"""Real-ESRGAN in torch, with the shipped ncnn weights read by our own code, against ncnn itself.

Equality on a real photo (a 64x64 crop of skimage's astronaut, her face and hair): the uint8
results may differ by at most TOLERANCE grey levels. Measured on this machine's CPU (x86, ncnn
computing in float32 from the fp16-stored weights): float outputs within 0.001 grey levels for
all three nets, uint8 outputs within 1 (a value on a rounding edge).
"""
import struct

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tabs.upscale import model as up
from tabs.upscale import ncnn_weights, torch_nets

TOLERANCE = 2   # grey levels (0..255) on the uint8 result


@pytest.fixture(scope="module")
def photo():
    return np.ascontiguousarray(skimage.data.astronaut()[100:164, 180:244])


def as_uint8(chw: np.ndarray) -> np.ndarray:
    return np.clip(chw.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name,scale", [(up.UPSCALE_FAST, 2), (up.UPSCALE_FAST, 4), (up.UPSCALE_X4PLUS, 4)])
def test_torch_net_equals_ncnn_on_a_photo(photo, name, scale):
    ncnn_model = up._loader(name)("cpu")
    try:
        reference = up._run_net(ncnn_model.nets[scale], photo)
    finally:
        ncnn_model.close()
    ours = torch_nets.run_patch(torch_nets.load(name, scale), photo)
    assert ours.shape == reference.shape == (3, 64 * scale, 64 * scale)
    diff = np.abs(as_uint8(ours).astype(int) - as_uint8(reference))
    assert diff.max() <= TOLERANCE, f"{name} x{scale}: max difference {diff.max()} grey levels"
    # The comparison can tell nets apart: bicubic is far from both.
    bicubic = np.asarray(Image.fromarray(photo).resize((64 * scale,) * 2, Image.BICUBIC)).astype(int)
    assert np.abs(bicubic - as_uint8(reference)).max() > 10 * TOLERANCE


def test_the_fast_nets_are_one_x4_net_and_x2_adds_a_bicubic_halving():
    folder = up.weights_dir()
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
    first = torch_nets.load(up.UPSCALE_FAST, 4, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and f"-v{torch_nets.CONVERTER_VERSION}-" in files[0].name

    def no_reading(*args):
        raise AssertionError("the cached conversion was not used")
    monkeypatch.setattr(torch_nets, "read_model", no_reading)
    second = torch_nets.load(up.UPSCALE_FAST, 4, cache_dir=tmp_path)
    assert np.array_equal(torch_nets.run_patch(first, photo[:16, :16]), torch_nets.run_patch(second, photo[:16, :16]))


def test_the_tiling_path_drives_a_torch_net_unchanged(monkeypatch):
    """model.upscale_tiles (edge padding, margins, crops) with the torch net in place of ncnn's."""
    image = np.ascontiguousarray(skimage.data.coffee()[40:120, 200:296])   # 80x96: 2x2 tiles of 48
    ncnn_model = up._loader(up.UPSCALE_FAST)("cpu")
    try:
        reference = up.upscale_tiles(ncnn_model.nets[2], image, 2, tile=48, margin=16)
    finally:
        ncnn_model.close()
    monkeypatch.setattr(up, "_run_net", torch_nets.run_patch)
    ours = up.upscale_tiles(torch_nets.load(up.UPSCALE_FAST, 2), image, 2, tile=48, margin=16)
    assert ours.shape == reference.shape == (160, 192, 3)
    assert np.abs(ours.astype(int) - reference).max() <= TOLERANCE
