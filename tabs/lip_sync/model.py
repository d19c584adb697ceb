"""Lip sync with Wav2Lip GAN (FaceFusion's wav2lip_gan_96 ONNX) on the one face detector.

Pre- and post-processing follow Wav2Lip's inference.py (docs/face_studio_facts.md §3, "Crop
(Wav2Lip original)", "Inputs", "Output"):
- the face box, padded 10 px at the bottom (pads [0, 10, 0, 0]: top, bottom, left, right) and
  clipped to the frame, truncated to whole pixels; in a video the boxes are averaged over 5 frames;
- the box cut out in BGR (Wav2Lip reads frames with OpenCV), resized to 96x96 (cv2.resize's
  default bilinear), a copy with its lower half (rows 48-95) zeroed stacked before the unmasked
  reference: (1, 6, 96, 96) / 255; the mel window (1, 1, 80, 16) (mel.py);
- the output (1, 3, 96, 96) BGR in [0, 1] times 255, truncated to uint8 as Wav2Lip does, resized
  back to the box.
Wav2Lip pastes the box as it is; here it is blended under a soft box mask (face_align.box_mask,
FaceFusion's blur 0.3: its 7 outer pixels of 96 keep the frame, then a Gaussian ramp), because
the 96 px face is softer than the frame around it and a hard edge shows as a rectangle. Only the
padded box can change.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from analysers import face_align
from engine import ModelSpec, UserFacingError
from engine.runtimes import onnx_runtime
from store import hub_files, hub_messages
from store.manifest import SESSION_BYTES, HubFile

from .manifest import ACTIVATIONS, ENTRIES, WAV2LIP_BYTES, WAV2LIP_GAN

SIZE = 96
PADS = (0, 10, 0, 0)       # top, bottom, left, right: Wav2Lip's --pads default
SMOOTH = 5                 # boxes averaged over this many frames (get_smoothened_boxes, T=5)
MASK_BLUR = 0.3            # FaceFusion's box-mask blur, for the soft paste (see the docstring)
LABEL = "Lip sync"
SECTION, APIS = "Get the model file", "lip_sync_download, lip_sync_bring"


class LipSyncer:
    """A loaded Wav2Lip graph: its ONNX Runtime session, fed by input name, read at output 0."""

    def __init__(self, session):
        self.session = session

    def run(self, mel_window: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """(1, 1, 80, 16) mel and (1, 6, 96, 96) faces -> (96, 96, 3) uint8 BGR."""
        out = self.session.run(None, {"source": mel_window, "target": faces})[0][0]
        return (np.clip(out, 0.0, 1.0).transpose(1, 2, 0) * 255.0).astype(np.uint8)

    def close(self) -> None:
        self.session = None


def open_syncer(path: Path, device: str) -> LipSyncer:
    return LipSyncer(onnx_runtime.session(path, device))


def problem(data_dir: str | os.PathLike, entry: HubFile = WAV2LIP_GAN) -> str | None:
    """None when the file is ready, else a short message for an error (status() has the details)."""
    return hub_messages.short_problem(entry, data_dir, LABEL, SECTION, APIS)


def status(data_dir: str | os.PathLike, entry: HubFile = WAV2LIP_GAN) -> str | None:
    """None when the file is in place and checked (graph, licence, trusted), else what to do."""
    return hub_messages.explain(entry, data_dir)


def specs(data_dir: str | os.PathLike = "data") -> list[ModelSpec]:
    """Wav2Lip GAN, its file looked for in data_dir's hub-files (tabs.catalog passes the engine's)."""
    entry = WAV2LIP_GAN
    return [ModelSpec(name=entry.name, role="heavy",   # 145 MB, used now and then
                      runtime="onnxruntime", device=onnx_runtime.spec_device(), unloader=LipSyncer.close,
                      loader=hub_files.HubLoader(entry, data_dir, open_syncer),
                      source=f"hub file {entry.file} ({entry.urls[0]})",
                      estimate_bytes=WAV2LIP_BYTES + SESSION_BYTES,
                      run_estimate_bytes=ACTIVATIONS, networks=1,
                      function="lip sync (Wav2Lip GAN)",
                      description="Wav2Lip GAN (FaceFusion's ONNX, 96 px): moves a face's lips to any audio")]


def entry_named(name: str) -> HubFile:
    found = ENTRIES.get(name) or next((e for e in ENTRIES.values() if e.name == name), None)
    if found is None:
        raise UserFacingError(f"Model must be {', '.join(ENTRIES)}.")
    return found


# ------------------------------------------------------------------ boxes

def padded_box(face: dict | None, height: int, width: int) -> list[int] | None:
    """The detector's box (largest face) with Wav2Lip's pads, clipped to the frame, whole pixels."""
    if face is None:
        return None
    x1, y1, x2, y2 = (int(v) for v in face["box"])
    top, bottom, left, right = PADS
    box = [max(0, x1 - left), max(0, y1 - top), min(width, x2 + right), min(height, y2 + bottom)]
    return box if box[2] > box[0] and box[3] > box[1] else None


def smooth(boxes: list[list[int] | None]) -> list[list[int] | None]:
    """Wav2Lip's get_smoothened_boxes over the frames that have a face: each box becomes the mean
    of itself and the next four (the last five at the end, which by then include boxes already
    averaged, as there), truncated to whole pixels. Frames without a face keep None."""
    found = [i for i, b in enumerate(boxes) if b is not None]
    values = np.array([boxes[i] for i in found], np.int64).reshape(-1, 4)
    for i in range(len(values)):
        window = values[max(0, len(values) - SMOOTH):] if i + SMOOTH > len(values) else values[i:i + SMOOTH]
        values[i] = np.mean(window, axis=0)   # int array: truncated, as Wav2Lip's
    out: list[list[int] | None] = [None] * len(boxes)
    for i, value in zip(found, values):
        out[i] = [int(v) for v in value]
    return out


# ------------------------------------------------------------------ crop, model, paste back

def faces_input(frame: np.ndarray, box: list[int]) -> np.ndarray:
    """(1, 6, 96, 96) float32: the box of an RGB frame in BGR, lower half zeroed, then unmasked."""
    x1, y1, x2, y2 = box
    face = cv2.resize(np.ascontiguousarray(frame[y1:y2, x1:x2, ::-1]), (SIZE, SIZE))
    masked = face.copy()
    masked[SIZE // 2:] = 0
    stacked = np.concatenate([masked, face], axis=2).astype(np.float32) / 255.0
    return np.ascontiguousarray(stacked.transpose(2, 0, 1)[None])


def paste(frame: np.ndarray, mouth_bgr: np.ndarray, box: list[int]) -> np.ndarray:
    """frame with the model's 96 px BGR face resized into box, under the soft box mask."""
    x1, y1, x2, y2 = box
    size = (x2 - x1, y2 - y1)
    face = cv2.resize(mouth_bgr, size)[..., ::-1].astype(np.float32)
    alpha = cv2.resize(face_align.box_mask(SIZE, MASK_BLUR), size)[..., None]
    out = frame.copy()
    region = out[y1:y2, x1:x2].astype(np.float32)
    out[y1:y2, x1:x2] = np.clip(np.round(region * (1 - alpha) + face * alpha), 0, 255).astype(np.uint8)
    return out


def sync_frame(syncer: LipSyncer, frame: np.ndarray, box: list[int] | None, mel_window: np.ndarray) -> np.ndarray:
    """One output frame: the lips of the face in box moved to mel_window; no box: the frame as it is."""
    if box is None:
        return frame
    return paste(frame, syncer.run(mel_window, faces_input(frame, box)), box)
