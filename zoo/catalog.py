"""Every model the app ships, declared once. Tabs ask for these by name."""
from __future__ import annotations

import functools
import importlib
import logging

from engine import JobKind, ModelSpec
from engine.doctor import Check
from engine.media.video_job import readable_video

from .package_files import reason_if_missing
from . import anonymize, face_detector

log = logging.getLogger(__name__)

MiB = 1024**2

FACE_DETECTOR = "face-detector"


def _face_specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            # ONNX Runtime ran detect_faces 1.27-1.29x faster than eager (bench compile); the
            # export is paid once per machine (~30-50 s) and cached by weights hash and versions.
            name=FACE_DETECTOR, role="interactive", runtime="torch",
            loader=functools.partial(face_detector.load_mtcnn, accelerate="onnx"), accelerate="onnx",
            source="facenet-pytorch 2.6.0 wheel: MTCNN pnet.pt, rnet.pt, onet.pt",
            estimate_bytes=2 * MiB, run_estimate_bytes=64 * MiB, max_instances=2,
            # MTCNN's pyramid cost grows with pixels: at 960x540 a 720p frame takes ~half the time
            # of full size and faces from ~27 px (720p) / ~40 px (1080p) are still found.
            max_pixels=960 * 540,
            description="MTCNN: face boxes and 5 landmarks; shared by every face feature"),
    ]


def _face_reason() -> str | None:
    return reason_if_missing(face_detector.weights_dir)


# Each module has specs(), unavailable_reason() and, where it has long inputs, job_kinds().
FAMILIES = ["nsfw", "style", "ocr", "upscale", "background", "face_identity",
            "stt", "tts", "vad", "pitch", "denoise", "voices"]


@functools.lru_cache(maxsize=None)
def _module(name: str):
    try:
        return importlib.import_module(f"zoo.{name}")
    except ImportError as exc:   # a missing package costs only its own tab, which says why
        log.warning("zoo.%s is unavailable: %s", name, exc)
        return None


def _families() -> list[tuple]:
    """(specs, job kinds, why unavailable) per model family."""
    families = [(_face_specs, lambda: [JobKind("blur_faces_video", FACE_DETECTOR, anonymize.video_job,
                                                check_inputs=readable_video)], _face_reason)]
    for name in FAMILIES:
        module = _module(name)
        if module is not None:
            families.append((module.specs, getattr(module, "job_kinds", list), module.unavailable_reason))
    return families


def default_specs() -> list[ModelSpec]:
    return [spec for specs, _, _ in _families() for spec in specs()]


def default_job_kinds() -> list[JobKind]:
    return [kind for _, kinds, _ in _families() for kind in kinds()]


def unavailable_reason(name: str) -> str | None:
    """Why a model's weights are not here (None when they are), so its tab can say so."""
    for specs, _, reason in _families():
        if any(spec.name == name for spec in specs()):
            return reason()
    raise KeyError(f"no model named {name!r} in the catalog")


def doctor_checks() -> list:
    """One doctor check per model: are its weights here, and what installs them."""
    def weights() -> list[Check]:
        checks = []
        for specs, _, why in _families():
            reason = why()
            for spec in specs():
                checks.append(Check(f"weights: {spec.name}", "error" if reason else "ok",
                                    reason or spec.source, "./setup.sh" if reason else ""))
        return checks
    return [weights]
