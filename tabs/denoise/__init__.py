"""Denoise: take background noise out of speech (DeepFilterNet3, or RNNoise as the light option),
in an audio file or the sound of a video."""
from __future__ import annotations

import os

import numpy as np

from engine import JobKind, ModelSpec, UserFacingError
from engine.media.audio import probe_audio
from engine.requests import given, positive

from .denoisers import DEEPFILTERNET, MODELS, model_unavailable, tab_unavailable_reason
from .model import DENOISE_LONG, choice, long_job
from .model import specs as _specs

TITLE = "Denoise"
GROUP = "Audio"  # shown as a sub-tab of Audio


def specs() -> list[ModelSpec]:
    return _specs()


def job_kinds() -> list[JobKind]:
    return [JobKind(DENOISE_LONG, DEEPFILTERNET, long_job, check=check)]


def unavailable() -> str | None:
    """None while at least one of the two models is here: the tab offers the ones it has."""
    return tab_unavailable_reason()


def check(params: dict, inputs: dict) -> None:
    """A denoise request, refused with a plain UserFacingError when it could not run.

    params: model ('deepfilternet' or 'rnnoise', one installed here; default 'deepfilternet'),
    sr (the sample rate of samples given as an array). inputs: media, a file that holds audio
    (an audio file or a video with sound), or samples (mono, or stereo as (n, channels)).
    """
    media = inputs.get("media")
    if not given(media):
        raise UserFacingError("Upload an audio or video file first.")
    model = choice(params.get("model", "deepfilternet"))
    if model not in MODELS:
        raise UserFacingError(f"Unknown denoise model {params.get('model')!r}: use one of {', '.join(MODELS)}.")
    reason = model_unavailable(model)
    if reason:
        raise UserFacingError(f"The {model} model is not available here: {reason}")
    if isinstance(media, (str, os.PathLike)):
        probe_audio(media)   # a MediaError is a UserFacingError: its message is for the user
        return
    samples = np.asarray(media)
    if samples.ndim not in (1, 2):
        raise UserFacingError(f"Expected mono samples, got an array of shape {samples.shape}.")
    if samples.size == 0:
        raise UserFacingError("There is no audio to denoise.")
    if not positive(params.get("sr")):
        raise UserFacingError(f"The sample rate must be positive, not {params.get('sr')}.")
