"""Every model the app ships, declared once. Tabs ask for these by name."""
from __future__ import annotations

from engine import JobKind, ModelSpec

from .package_files import reason_if_missing
from . import anonymize, face_detector, nsfw, ocr, style, upscale

MiB = 1024**2

FACE_DETECTOR = "face-detector"


def default_specs() -> list[ModelSpec]:
    return _face_specs() + nsfw.specs() + style.specs() + ocr.specs() + upscale.specs()


def _face_specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=FACE_DETECTOR, role="interactive", runtime="torch", loader=face_detector.load_mtcnn,
            source="facenet-pytorch 2.6.0 wheel: MTCNN pnet.pt, rnet.pt, onet.pt",
            estimate_bytes=2 * MiB, run_estimate_bytes=64 * MiB, max_instances=2,
            # MTCNN's pyramid cost grows with pixels: at 960x540 a 720p frame takes ~half the time
            # of full size and faces from ~27 px (720p) / ~40 px (1080p) are still found.
            max_pixels=960 * 540,
            description="MTCNN: face boxes and 5 landmarks; shared by every face feature"),
    ]


def default_job_kinds() -> list[JobKind]:
    return ([JobKind("blur_faces_video", FACE_DETECTOR, anonymize.video_job)] + style.job_kinds()
            + ocr.job_kinds() + upscale.job_kinds())


def unavailable_reason(name: str) -> str | None:
    """Why a model's weights are not here (None when they are), so its tab can say so."""
    if name == FACE_DETECTOR:
        return reason_if_missing(face_detector.weights_dir)
    return None
