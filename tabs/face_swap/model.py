"""Face swap on the hub ONNX files of InsightFace's inswapper_128 and its ArcFace w600k_r50 embedder,
on the one face detector.

The source photo's largest face is aligned to arcface_112_v2 and embedded by ArcFace; the embedding,
L2-normalised, times the swapper's emap (its graph's last initializer), normalised again, is the
latent InsightFace's own inswapper code feeds (facts §1a "Source latent, InsightFace"; FaceFusion
skips the second normalisation: InsightFace's, the model's authors', is the one kept here). Each
chosen face of the target photo is aligned to arcface_128 at 128 px, swapped, and pasted back under
FaceFusion's default box mask (blur 0.3, padding 0) (facts and sources: docs/face_studio_facts.md §1, §5).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from analysers import face_align, face_detector
from analysers.face_detector import FACE_DETECTOR
from engine import Call, ModelSpec, UserFacingError
from engine.runtimes import onnx_runtime
from store import hub_files, hub_messages
from store.manifest import HubFile, load_estimate

from .manifest import ARCFACE, EMBED_ACTIVATIONS, ENTRIES, INSWAPPER, SWAP_ACTIVATIONS

EVERY = "every face"
SWAP_SIZE, EMBED_SIZE = 128, 112
# InsightFace's arcface_dst (utils/face_align.py): left eye, right eye, nose, left and right mouth
# corners at 112 px, the order MTCNN gives its landmarks in. arcface_112_v2 is it; arcface_128 is it
# shifted 8 px right (estimate_norm at 128: ratio 1, diff_x 8).
ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
ARCFACE_112_V2 = ARCFACE_DST
ARCFACE_128 = ARCFACE_DST + np.array([8.0, 0.0], np.float32)
MASK_BLUR = 0.3            # FaceFusion's default face_mask_blur (padding 0 0 0 0)
EMAP_SHAPE = (512, 512)


class Embedder:
    """ArcFace w600k_r50: its session, fed at input 0 (the original file's name is not known)."""

    def __init__(self, session):
        self.session = session
        self.input = session.get_inputs()[0].name

    def embed(self, crop: np.ndarray) -> np.ndarray:
        """uint8 RGB [112, 112, 3] arcface_112_v2 crop -> the raw 512-d embedding (float32)."""
        x = (crop.astype(np.float32) - 127.5) / 127.5
        return self.session.run(None, {self.input: np.ascontiguousarray(x.transpose(2, 0, 1)[None])})[0][0]

    def close(self) -> None:
        self.session = None


def read_emap(path: str | os.PathLike) -> np.ndarray:
    """The swapper's emap: its graph's last initializer, as InsightFace and FaceFusion read it."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    emap = numpy_helper.to_array(graph.initializer[-1]) if graph.initializer else np.zeros(0)
    if emap.shape != EMAP_SHAPE:
        raise UserFacingError(f"{Path(path).name}: its last weight should be the 512x512 matrix the face "
                              f"embedding is multiplied by; this file's is {list(emap.shape)}. It is not the "
                              f"{INSWAPPER.file} the face swap expects.")
    return emap.astype(np.float32)


class Swapper:
    """inswapper_128: its session, fed by input name, read at output 0, and its emap."""

    def __init__(self, session, emap: np.ndarray):
        self.session, self.emap = session, emap

    def latent(self, embedding: np.ndarray) -> np.ndarray:
        """InsightFace's: normed embedding @ emap, normalised again; [1, 512] float32."""
        normed = embedding / np.linalg.norm(embedding)
        latent = normed.reshape(1, -1) @ self.emap
        return (latent / np.linalg.norm(latent)).astype(np.float32)

    def run(self, crop: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """uint8 RGB [128, 128, 3] arcface_128 crop -> the swapped face, uint8 RGB [128, 128, 3]."""
        x = crop.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        y = self.session.run(None, {"target": np.ascontiguousarray(x), "source": latent})[0][0]
        return np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)

    def close(self) -> None:
        self.session = None


# ------------------------------------------------------------------ files, specs

def problems(data_dir: str | os.PathLike) -> str | None:
    """None when both files are ready, else one short line for an error (status() has the details)."""
    return hub_messages.short_problems(ENTRIES.values(), data_dir, "Face swap", "Get the model files",
                                       "swap_faces_download, swap_faces_bring")


def status(data_dir: str | os.PathLike, entry: HubFile) -> str | None:
    """None when the file is in place and checked, else what to do, in plain words."""
    return hub_messages.explain(entry, data_dir)


def open_swapper(path: Path, device: str) -> Swapper:
    emap = read_emap(path)   # before the session: a wrong file costs no session
    return Swapper(onnx_runtime.session(path, device), emap)


def open_embedder(path: Path, device: str) -> Embedder:
    return Embedder(onnx_runtime.session(path, device))


def HubLoader(entry: HubFile, data_dir: str | os.PathLike) -> hub_files.HubLoader:
    """The loader of either file (tests open one directly)."""
    return hub_files.HubLoader(entry, data_dir, open_swapper if entry.name == INSWAPPER.name else open_embedder)


def specs(data_dir: str | os.PathLike = "data") -> list[ModelSpec]:
    """The swapper and its embedder, loading their files from data_dir's hub-files."""
    common = dict(role="heavy", runtime="onnxruntime", device=onnx_runtime.spec_device(), networks=1)
    return [
        ModelSpec(name=INSWAPPER.name, loader=HubLoader(INSWAPPER, data_dir), unloader=Swapper.close,
                  source=f"hub file {INSWAPPER.file} ({INSWAPPER.urls[0]})", estimate_bytes=load_estimate(INSWAPPER),
                  run_estimate_bytes=SWAP_ACTIVATIONS, function="face swap (inswapper_128)",
                  description="InsightFace inswapper_128: puts a source identity onto a 128 px aligned face",
                  **common),
        ModelSpec(name=ARCFACE.name, loader=HubLoader(ARCFACE, data_dir), unloader=Embedder.close,
                  source=f"hub file {ARCFACE.file} ({ARCFACE.urls[0]})", estimate_bytes=load_estimate(ARCFACE),
                  run_estimate_bytes=EMBED_ACTIVATIONS, function="face identity for face swap (ArcFace w600k_r50)",
                  description="InsightFace ArcFace w600k_r50 (buffalo_l): the source face's 512-d identity",
                  **common),
    ]


def entry_named(name: str) -> HubFile:
    """The manifest entry of a choice the tab offers or an engine name."""
    found = ENTRIES.get(name) or next((e for e in ENTRIES.values() if e.name == name), None)
    if found is None:
        raise UserFacingError(f"The model file must be one of {', '.join(ENTRIES)}.")
    return found


# ------------------------------------------------------------------ align, swap, paste back

align = face_align.align
find_faces = face_align.find_faces
paste_back = face_align.paste_back


def box_mask(size: int = SWAP_SIZE, blur: float = MASK_BLUR) -> np.ndarray:
    return face_align.box_mask(size, blur)


def swap(model: Swapper, image: np.ndarray, faces: list[dict], embedding: np.ndarray,
         colour_match: bool = False) -> np.ndarray:
    """Every face in faces swapped to the embedding's identity, one after the other on the updated
    frame; with colour_match, each new face takes the colours of the face it replaces (skin tone,
    light) before it is pasted back."""
    latent = model.latent(embedding)
    out = np.ascontiguousarray(image)
    for face in faces:
        crop, matrix = align(out, face["landmarks"], ARCFACE_128, SWAP_SIZE)
        swapped = model.run(crop, latent)
        if colour_match:
            swapped = face_align.match_colour(swapped, crop, box_mask())
        out = paste_back(out, swapped, box_mask(), matrix)
    return out


def chosen(which, count: int) -> list[int]:
    """The 0-based indices of the target faces to swap: all, or the one numbered `which` (1 = largest)."""
    if str(which).strip().lower() == EVERY:
        return list(range(count))
    number = int(float(which))   # "2", 2 and "2.0" alike; check() refused anything else
    if not 1 <= number <= count:
        raise UserFacingError(f"The target photo has {count} face{'s' if count != 1 else ''}: choose a face "
                              f"from 1 to {count} (1 is the largest), or \"{EVERY}\".")
    return [number - 1]


NOT_FOUND = "Faces smaller than about 20 pixels, or turned far away, are not found."


def source_embedding(call: Call, source: np.ndarray, max_pixels: int | None) -> np.ndarray:
    """ArcFace's raw embedding of the source photo's largest face (aligned to arcface_112_v2)."""
    faces = call(FACE_DETECTOR, lambda d: find_faces(d, source, max_pixels))
    if not faces:
        raise UserFacingError(f"No face was found in the source photo, so there is no face to put in. {NOT_FOUND}")
    crop, _ = align(source, faces[0]["landmarks"], ARCFACE_112_V2, EMBED_SIZE)
    return call(ARCFACE.name, lambda m: m.embed(crop))


def swap_photo(call: Call, source: np.ndarray, target: np.ndarray, which, max_pixels: int | None,
               colour_match: bool = False) -> tuple[np.ndarray, dict]:
    """(the target photo with the chosen faces given the source's face, what was done)."""
    source, target = face_detector.as_rgb(source), face_detector.as_rgb(target)
    embedding = source_embedding(call, source, max_pixels)
    targets = call(FACE_DETECTOR, lambda d: find_faces(d, target, max_pixels))
    if not targets:
        raise UserFacingError(f"No face was found in the target photo, so there is nothing to swap. {NOT_FOUND}")
    picked = chosen(which, len(targets))
    out = call(INSWAPPER.name, lambda m: swap(m, target, [targets[i] for i in picked], embedding, colour_match))
    return out, {"faces": len(targets), "swapped": [i + 1 for i in picked],
                 "boxes": [[round(v) for v in f["box"][:4]] for f in targets]}
