"""Random-weight ONNX graphs with exactly the input and output names, shapes and dtypes the four
LivePortrait files are declared with (tabs/portrait_animation/manifest.py, facts §4a), small and
seeded, built with onnx.helper, whose outputs depend on their inputs so that motion can be seen:

- feature extractor: 'input' (1,3,256,256) -> 4x4 average pool, a random 1x1 convolution to 512
  channels, reshaped to the volume (1,32,16,64,64).
- motion extractor: 'input' -> the crop's mean colour and its colour weighted by a left-to-right
  ramp (6 numbers), a random linear map, tanh, scaled into plausible ranges (pitch +-20, yaw
  +-40, roll +-10 degrees, scale 1 +- 0.2, translation +-0.1, expression +-0.02, canonical
  points around fixed random ones) -> the seven outputs in FaceFusion's order.
- stitcher: 'source', 'target' (1,21,3) -> source + 0.05 tanh(W (source - target)): the driven
  points untouched when they are the portrait's own.
- generator: 'feature_volume', 'source', 'target' -> sigmoid(a random 1x1 convolution of the
  volume, upsampled x8, plus 2 W (source - target) per colour): the face's colour follows the motion.
  `ballast` adds that many random float32 weights, used through a Gather whose index comes from an
  input (so ONNX Runtime cannot fold them away): a graph of the real file's size for the footprint.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

from tabs.portrait_animation import manifest

F = TensorProto.FLOAT


def _io(tensor, name=None):
    return helper.make_tensor_value_info(name or tensor.name, F, list(tensor.shape))


def _save(path, nodes, inputs, outputs, weights):
    graph = helper.make_graph(nodes, "live_portrait_stand_in", inputs, outputs,
                              initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in weights.items()])
    graph_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    graph_model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(graph_model, str(path))
    return path


def feature_extractor(path, seed=1, out_shape=None):
    rng = np.random.default_rng(seed)
    entry = manifest.FEATURE_EXTRACTOR
    nodes = [helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Conv", ["pooled", "W"], ["wide"]),
             helper.make_node("Reshape", ["wide", "shape"], ["volume"])]
    weights = {"W": rng.normal(0, 0.5, (512, 3, 1, 1)).astype(np.float32),
               "shape": np.array(manifest.FEATURE_VOLUME, np.int64)}
    out = helper.make_tensor_value_info("volume", F, list(out_shape or manifest.FEATURE_VOLUME))
    return _save(path, nodes, [_io(entry.inputs[0])], [out], weights)


# (name, width, tanh range, offset) of the 133 numbers the motion graph makes, in output order.
_MOTION = [("pitch", 1, 20.0, 0.0), ("yaw", 1, 40.0, 0.0), ("roll", 1, 10.0, 0.0), ("scale", 1, 0.2, 1.0),
           ("translation", 3, 0.1, 0.0), ("expression", 63, 0.02, 0.0), ("canonical", 63, 0.01, None)]


def motion_extractor(path, seed=2, outputs=7):
    rng = np.random.default_rng(seed)
    ranges, offsets = [], []
    for _, width, span, offset in _MOTION:
        ranges += [span] * width
        offsets += list(rng.uniform(-0.5, 0.5, width)) if offset is None else [offset] * width
    ramp = np.broadcast_to(np.linspace(-1, 1, 256, dtype=np.float32), (1, 1, 256, 256)).copy()
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["mean4"]),
             helper.make_node("Mul", ["input", "ramp"], ["ramped"]),
             helper.make_node("GlobalAveragePool", ["ramped"], ["side4"]),
             helper.make_node("Concat", ["mean4", "side4"], ["both4"], axis=1),
             helper.make_node("Flatten", ["both4"], ["features"]),
             helper.make_node("Gemm", ["features", "W", "B"], ["z"]),
             helper.make_node("Tanh", ["z"], ["t"]),
             helper.make_node("Mul", ["t", "ranges"], ["spread"]),
             helper.make_node("Add", ["spread", "offsets"], ["all"])]
    weights = {"ramp": ramp, "W": rng.normal(0, 4.0, (6, 133)).astype(np.float32),
               "B": rng.normal(0, 0.5, 133).astype(np.float32),
               "ranges": np.array([ranges], np.float32), "offsets": np.array([offsets], np.float32)}
    start, outs = 0, []
    weights["axis1"] = np.array([1], np.int64)
    for (name, width, _, _), tensor in zip(_MOTION, manifest.MOTION_EXTRACTOR.outputs):
        weights[f"{name}_from"], weights[f"{name}_to"] = np.array([start], np.int64), np.array([start + width], np.int64)
        weights[f"{name}_shape"] = np.array(tensor.shape, np.int64)
        nodes += [helper.make_node("Slice", ["all", f"{name}_from", f"{name}_to", "axis1"], [f"{name}_flat"]),
                  helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [name])]
        outs.append(helper.make_tensor_value_info(name, F, list(tensor.shape)))
        start += width
    return _save(path, nodes, [_io(manifest.MOTION_EXTRACTOR.inputs[0])], outs[:outputs], weights)


def stitcher(path, seed=3):
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Sub", ["source", "target"], ["diff"]),
             helper.make_node("Flatten", ["diff"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], ["z"]),
             helper.make_node("Tanh", ["z"], ["t"]),
             helper.make_node("Mul", ["t", "gain"], ["delta"]),
             helper.make_node("Reshape", ["delta", "shape"], ["delta3"]),
             helper.make_node("Add", ["source", "delta3"], ["stitched"])]
    weights = {"W": rng.normal(0, 1.0, (63, 63)).astype(np.float32), "gain": np.array([0.05], np.float32),
               "shape": np.array(manifest.POINTS, np.int64)}
    inputs = [_io(t) for t in manifest.STITCHER.inputs]
    return _save(path, nodes, inputs, [helper.make_tensor_value_info("stitched", F, list(manifest.POINTS))], weights)


def generator(path, seed=4, ballast=0, source_name="source"):
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Reshape", ["feature_volume", "flat_shape"], ["planes"]),
             helper.make_node("Conv", ["planes", "W"], ["small"]),
             helper.make_node("Resize", ["small", "", "scales"], ["base"], mode="linear"),
             helper.make_node("Sub", [source_name, "target"], ["diff"]),
             helper.make_node("Flatten", ["diff"], ["flat"]),
             helper.make_node("MatMul", ["flat", "M"], ["colour"]),
             helper.make_node("Reshape", ["colour", "colour_shape"], ["shift"]),
             helper.make_node("Add", ["base", "shift"], ["mixed"])]
    weights = {"flat_shape": np.array([1, 512, 64, 64], np.int64),
               "W": rng.normal(0, 0.05, (3, 512, 1, 1)).astype(np.float32),
               "scales": np.array([1, 1, 8, 8], np.float32),
               "M": rng.normal(0, 2.0, (63, 3)).astype(np.float32),
               "colour_shape": np.array([1, 3, 1, 1], np.int64)}
    last = "mixed"
    if ballast:
        weights["ballast"] = rng.standard_normal(ballast, dtype=np.float32)
        nodes += [helper.make_node("ReduceMin", [source_name], ["low"], keepdims=0),
                  helper.make_node("Mul", ["low", "zero"], ["none"]),
                  helper.make_node("Cast", ["none"], ["index"], to=TensorProto.INT64),
                  helper.make_node("Gather", ["ballast", "index"], ["picked"]),
                  helper.make_node("Mul", ["picked", "zero"], ["nothing"]),
                  helper.make_node("Add", ["mixed", "nothing"], ["weighed"])]
        weights["zero"] = np.array(0.0, np.float32)
        last = "weighed"
    nodes.append(helper.make_node("Sigmoid", [last], ["face"]))
    names = {"source": source_name}
    inputs = [_io(t, names.get(t.name)) for t in manifest.GENERATOR.inputs]
    return _save(path, nodes, inputs, [helper.make_tensor_value_info("face", F, list(manifest.FACE_OUT))], weights)


GRAPHS = {manifest.FEATURE_EXTRACTOR: feature_extractor, manifest.MOTION_EXTRACTOR: motion_extractor,
          manifest.STITCHER: stitcher, manifest.GENERATOR: generator}


def bring_all(data, folder, **generator_kw):
    """The four stand-ins taken by the store as a user's own files are: trusted (their sha256 is
    not the real files')."""
    from store import hub_files

    for entry, make in GRAPHS.items():
        kw = generator_kw if entry is manifest.GENERATOR else {}
        hub_files.bring(entry, make(folder / "graphs" / entry.file, **kw), data, trust_unlisted=True)
