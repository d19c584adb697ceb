"""Who is in a photo: its faces (found on a copy shrunk to the detector's limit), the identity of
the largest one (the one face embedder's 128 numbers), and whether two photos show the same person."""
from __future__ import annotations


import numpy as np

from engine import Call, UserFacingError
from engine.media.video import limit_pixels

from analysers import face_detector, face_identity
from analysers.face_detector import FACE_DETECTOR


REFERENCE = "photo of the person to keep"   # the reference photo, as messages name it
CHIP_SIZE = 200   # px of each aligned face shown side by side by compare


def scale_faces(faces: list[dict], factor: float) -> list[dict]:
    """Faces found on a shrunk frame, in the original frame's pixels."""
    if factor == 1.0:
        return faces
    return [{**f, "box": [v * factor for v in f["box"]],
             "landmarks": [[x * factor, y * factor] for x, y in f["landmarks"]]} for f in faces]


def find_faces(detector, image: np.ndarray, max_pixels: int | None) -> list[dict]:
    """Faces of one image, detected on a copy shrunk to the detector's limit, in the image's pixels."""
    small, scale = limit_pixels(image, max_pixels) if max_pixels else (image, 1.0)
    return scale_faces(face_detector.detect_faces(detector, small), 1.0 / scale)


def person(call: Call, image: np.ndarray, max_pixels: int | None) -> dict | None:
    """The largest face in a photo, as {"embedding", "face", "faces_in_photo"}; None with no face."""
    faces = call(FACE_DETECTOR, lambda detector: find_faces(detector, image, max_pixels))
    face = face_identity.largest(faces)
    if face is None:
        return None
    embedding = call(face_identity.FACE_EMBEDDER, lambda embedder: embedder.embed(image, [face])[0])
    return {"embedding": embedding, "face": face, "faces_in_photo": len(faces)}


def reference_embedding(call: Call, photo: np.ndarray, max_pixels: int | None) -> np.ndarray:
    """The embedding of the person to keep visible; a UserFacingError when the photo has no face."""
    found = person(call, photo, max_pixels)
    if found is None:
        raise UserFacingError(f"The {REFERENCE} shows no face.")
    return found["embedding"]


def compare(call: Call, image_1: np.ndarray, image_2: np.ndarray,
            max_pixels: int | None) -> tuple[np.ndarray, dict]:
    """The largest faces of two photos, aligned side by side, and the verdict as JSON (see the
    compare_faces endpoint); a UserFacingError naming the photo that has no face."""
    found = []
    for index, image in enumerate((image_1, image_2), start=1):
        face = person(call, image, max_pixels)
        if face is None:
            raise UserFacingError(f"No face found in photo {index}.")
        found.append(face)
    pairs = list(zip((image_1, image_2), found))
    chips = call(face_identity.FACE_EMBEDDER,
                 lambda embedder: [embedder.chips(i, [p["face"]], CHIP_SIZE)[0] for i, p in pairs])
    distance = float(face_identity.distances(found[0]["embedding"][None], found[1]["embedding"])[0])
    result = {"distance": round(distance, 4), "same_person": distance < face_identity.THRESHOLD,
              "threshold": face_identity.THRESHOLD}
    for index, p in enumerate(found, start=1):
        result[f"face_{index}"] = {"box": [round(float(v), 2) for v in p["face"]["box"]],
                                   "faces_in_photo": p["faces_in_photo"]}
    return np.concatenate(chips, axis=1), result
