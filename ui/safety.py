"""Public-link safety for image outputs: above a threshold on the NSFW check, an output is
blurred and the user is told why. On by default when the app is shared, configurable."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np


@dataclass
class GatePolicy:
    enabled: bool = False
    threshold: float = 0.8


POLICY = GatePolicy()


def configure(mode: str, threshold: float, shared: bool) -> GatePolicy:
    """mode 'auto' turns the gate on exactly when the app is served on a public link."""
    if mode not in ("auto", "on", "off"):
        raise ValueError("--nsfw-gate must be auto, on or off")
    POLICY.enabled = mode == "on" or (mode == "auto" and shared)
    POLICY.threshold = threshold
    return POLICY


def gate_output(engine, image: np.ndarray | None) -> np.ndarray | None:
    """The image as it may be shown: unchanged, or blurred with a notice when it scores high."""
    if image is None or not POLICY.enabled:
        return image
    from analysers import nsfw

    shown, notice = nsfw.gate(engine, image, POLICY.threshold)
    if notice:
        gr.Warning(notice)
    return shown
