"""LiteRT's answers for the selfie segmenter, kept as test data: selfie_litert_reference.npz.

The Background capability runs MediaPipe's selfie_segmentation.tflite on torch / ONNX Runtime
(tabs/background/selfie_torch.py). LiteRT, the runtime the model was made for, is no longer a
dependency; what it computed is kept here so the tests can still hold the rebuild to it:

- P(person) at model resolution (256x256) for four real photos (skimage.data), as uint16 fixed
  point (p * 65535, rounded: within 8e-6 of LiteRT's float32, far below the tests' tolerance);
- the SHA-256 of each photo's model input (tabs.background.model.model_input), so a test can tell
  "the net changed" from "the preprocessing changed";
- the graph as LiteRT's interpreter sees it (operators, their tensors, tensor names and shapes,
  a SHA-256 of every constant's bytes), for the .tflite reader's tests;
- the SHA-256 of the .tflite file and the versions that made it.

Run once where LiteRT is installed (it is not in requirements.txt any more):

    .venv/bin/pip install ai-edge-litert==2.3.0
    .venv/bin/python tests/data/make_selfie_reference.py

It writes tests/data/selfie_litert_reference.npz (about 100 KB). Only needed again if the photos,
the preprocessing or the model file change; the tests say so when they do.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import skimage.data

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "selfie_litert_reference.npz"
SCALE = 65535  # P(person) stored as round(p * SCALE), uint16


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.dstack([image] * 3) if image.ndim == 2 else image


def photos() -> dict[str, np.ndarray]:
    """A woman in a space suit; a cup of coffee (no person); the cameraman (a person, in gray);
    a cat filling the frame (no person, but a large foreground)."""
    return {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(),
            "cameraman": _rgb(skimage.data.camera()), "chelsea": skimage.data.chelsea()}


def sha256(data: bytes | np.ndarray) -> str:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).tobytes()
    return hashlib.sha256(data).hexdigest()


def read_reference(path: Path = REFERENCE) -> dict:
    """The stored reference: {"probabilities": {photo: (256, 256) float32}, "input_sha256":
    {photo: hex}, "graph": dict, "model_sha256": hex, "versions": dict}."""
    with np.load(path) as data:
        names = [str(n) for n in data["photos"]]
        probabilities = data["probabilities"].astype(np.float32) / SCALE
        meta = json.loads(str(data["meta"]))
    meta["probabilities"] = dict(zip(names, probabilities))
    meta["input_sha256"] = dict(zip(names, meta["input_sha256"]))
    return meta


def _graph(interpreter) -> dict:
    """The graph as the interpreter has it: what tests/test_selfie_torch.py checks the reader against."""
    details = interpreter.get_tensor_details()
    ops = [op for op in interpreter._get_ops_details()  # the model's nodes, then XNNPACK's
           if op["op_name"] != "DELEGATE"]
    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = [int(d["index"]) for d in interpreter.get_input_details()]
    # A constant: read by an operator, written by none, not the graph's input.
    read = {int(i) for op in ops for i in op["inputs"] if i >= 0}
    constants = {}
    for index in sorted(read - produced - set(graph_inputs)):
        value = interpreter.get_tensor(index)
        constants[str(index)] = [str(value.dtype), sha256(value)]
    return {
        "operators": [[op["op_name"], op["inputs"].tolist(), op["outputs"].tolist()] for op in ops],
        "inputs": graph_inputs,
        "outputs": [int(d["index"]) for d in interpreter.get_output_details()],
        "tensors": [[d["name"], [int(v) for v in d["shape"]]] for d in details],
        "constants": constants,
    }


def main() -> None:
    from ai_edge_litert.interpreter import Interpreter  # only here: the tests never need it

    from tabs.background.model import model_input, model_path

    path = model_path()
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    _, height, width, _ = (int(v) for v in inp["shape"])
    names, stored, input_hashes = [], [], []
    for name, image in photos().items():
        x = model_input(image, height, width)
        interpreter.set_tensor(inp["index"], x[None])
        interpreter.invoke()
        p = np.array(interpreter.get_tensor(out["index"])[0, :, :, 0], dtype=np.float64)
        names.append(name)
        stored.append(np.round(np.clip(p, 0.0, 1.0) * SCALE).astype(np.uint16))
        input_hashes.append(sha256(x))
    versions = {d: importlib.metadata.version(d) for d in ("ai-edge-litert", "mediapipe", "numpy", "pillow")}
    meta = {"graph": _graph(interpreter), "model_sha256": sha256(path.read_bytes()),
            "model_file": path.name, "input_sha256": input_hashes, "versions": versions}
    np.savez_compressed(REFERENCE, photos=np.array(names), probabilities=np.stack(stored),
                        meta=np.array(json.dumps(meta, sort_keys=True)))
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size / 1024:.0f} KB): {', '.join(names)}; {versions}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for tabs.background
    main()
