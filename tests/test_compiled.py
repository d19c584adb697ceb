"""Compiled (torch.compile) and exported (ONNX Runtime) models give eager's answers, the export is
cached on disk and reused, and a model that cannot be exported runs eager and says why.
No timings here: bench/compile.py measures them."""
import logging
import os

import pytest
import skimage.data
import torch
from torch import nn

from engine.models import ModelSpec
from engine.runtimes import compiled
from engine.runtimes.compiled import Accelerated, Preparation, accelerate, weights_hash
from analysers import face_detector


class SmallNet(nn.Module):
    """Conv, PReLU, pooling and a second head: the kinds of layers MTCNN has, any image size."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.act = nn.PReLU(8)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(8, 4, 3)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.conv2(self.pool(self.act(self.conv1(x))))
        return x, torch.softmax(self.head(x), dim=1)


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot capture it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            return y * 2
        return y - 1


def _net():
    torch.manual_seed(0)
    return SmallNet().eval().requires_grad_(False)


def _examples():
    gen = torch.Generator().manual_seed(1)
    return [(torch.rand(2, 3, 20, 24, generator=gen),)]


def _assert_close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


# Other values, other sizes (odd and even: the pooling rounds up) and a batch of one.
SHAPES = [(2, 3, 20, 24), (3, 3, 17, 31), (1, 3, 40, 22)]


def _check_against_eager(net, fast, shapes=SHAPES):
    gen = torch.Generator().manual_seed(2)
    for shape in shapes:
        x = torch.rand(*shape, generator=gen)
        with torch.inference_mode():
            _assert_close(fast(x), net(x))


def test_onnx_export_matches_eager_and_is_cached(tmp_path, monkeypatch):
    net = _net()
    fast = accelerate(net, _examples(), "onnx", tmp_path, "small-net")
    assert isinstance(fast, Accelerated)
    assert fast.mode == "onnx", fast.info.reason
    assert fast.info.exported and fast.info.provider == "CPUExecutionProvider"
    assert fast.info.prepare_s > 0
    path = tmp_path / f"small-net-{weights_hash(net, _examples())}-torch{torch.__version__}-ort{__import__('onnxruntime').__version__}.onnx"
    assert fast.info.path == str(path) and path.is_file()
    assert not path.with_name(path.name + ".data").exists()  # one file: external_data=False
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    _check_against_eager(net, fast)

    # A second prepare (another instance, another process) loads the file instead of exporting.
    mtime = path.stat().st_mtime_ns
    exports = []
    monkeypatch.setattr(compiled, "_export", lambda *a, **k: exports.append(a))
    again = accelerate(_net(), _examples(), "onnx", tmp_path, "small-net")
    assert again.mode == "onnx" and not again.info.exported
    assert exports == [] and path.stat().st_mtime_ns == mtime
    _check_against_eager(net, again)


def test_other_weights_get_another_file(tmp_path):
    net, other = _net(), _net()
    with torch.no_grad():
        other.conv1.bias += 1
    assert weights_hash(net) != weights_hash(other)
    assert weights_hash(net) == weights_hash(_net())
    assert len(weights_hash(net)) == 16


def test_torch_compile_matches_eager(tmp_path):
    # Static shapes and one size: each new shape would be another C++ compile (seconds each).
    net = _net()
    fast = accelerate(net, _examples(), "compile", tmp_path, "small-net", dynamic=False)
    assert fast.mode == "compile", fast.info.reason
    assert fast.info.prepare_s > 0
    assert os.environ[compiled.INDUCTOR_ENV] == str(tmp_path / "inductor")
    assert any((tmp_path / "inductor").iterdir())  # inductor's cache went where we said
    _check_against_eager(net, fast, SHAPES[:1])


def test_unexportable_model_runs_eager_with_a_reason(tmp_path, caplog):
    torch.manual_seed(0)
    net = DataDependent().eval()
    with caplog.at_level(logging.WARNING, logger="engine.runtimes.compiled"):
        fast = accelerate(net, [(torch.rand(2, 3, 12, 12),)], "onnx", tmp_path, "data-dependent")
    assert fast.mode == "eager" and fast.info.requested == "onnx"
    assert "ONNX export failed" in fast.info.reason and "data-dependent" in fast.info.reason
    assert "falls back to eager" in caplog.text
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.tmp"))
    x = torch.rand(1, 3, 9, 9)
    torch.testing.assert_close(fast(x), net(x))


def test_failing_compile_runs_eager_with_a_reason(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    net = _net()
    fast = accelerate(net, _examples(), "compile", tmp_path, "small-net")
    assert fast.mode == "eager" and "torch.compile failed" in fast.info.reason
    assert "no C++ compiler" in fast.info.reason
    _check_against_eager(net, fast)


def test_a_run_that_fails_later_falls_back_to_eager():
    net = _net()
    fast = Accelerated(net, Preparation("small-net", "onnx", "onnx"), runner=net)
    x = torch.rand(2, 3, 20, 24)

    def out_of_memory(*args):
        raise MemoryError()

    fast.__dict__["_runner"] = out_of_memory
    with pytest.raises(MemoryError):  # the engine's OOM recovery handles that, not a fall-back
        fast(x)
    assert fast.mode == "onnx"

    def dead(*args):
        raise RuntimeError("session died")

    fast.__dict__["_runner"] = dead
    with torch.inference_mode():
        _assert_close(fast(x), net(x))
    assert fast.mode == "eager" and "session died" in fast.info.reason


def test_eager_mode_is_the_module():
    net = _net()
    fast = accelerate(net, _examples(), "eager")
    assert fast.mode == "eager" and fast.info.reason is None and fast.info.prepare_s == 0
    with pytest.raises(ValueError, match="mode must be one of"):
        accelerate(net, _examples(), "tensorrt")


def _boxes(faces):
    return [face["box"] + [face["score"]] for face in faces]


@pytest.fixture(scope="module")
def onnx_mtcnn(tmp_path_factory):
    return face_detector.load_mtcnn("cpu", accelerate="onnx", cache_dir=str(tmp_path_factory.mktemp("mtcnn-onnx")))


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_mtcnn_through_onnx_finds_the_same_faces(onnx_mtcnn, name):
    modes = face_detector.acceleration(onnx_mtcnn)
    assert {net: info["mode"] for net, info in modes.items()} == {"pnet": "onnx", "rnet": "onnx", "onet": "onnx"}, modes
    eager = face_detector.load_mtcnn("cpu")
    image = getattr(skimage.data, name)()
    want = face_detector.detect_faces(eager, image)
    got = face_detector.detect_faces(onnx_mtcnn, image)
    assert len(got) == len(want)
    if name == "astronaut":
        assert len(want) == 1
    for g, w in zip(got, want):
        assert all(abs(a - b) <= 1.0 for a, b in zip(g["box"], w["box"])), (g, w)
        assert abs(g["score"] - w["score"]) < 1e-3
        assert all(abs(a - b) <= 1.0 for p, q in zip(g["landmarks"], w["landmarks"]) for a, b in zip(p, q))


def test_mtcnn_default_is_eager():
    model = face_detector.load_mtcnn("cpu")
    assert type(model.pnet) is face_detector.PNet
    assert {info["mode"] for info in face_detector.acceleration(model).values()} == {"eager"}
