"""Public-link safety for image outputs: above a threshold on the NSFW check, an output is
blurred and the user is told why. On by default when the app is shared, configurable.

The policy is the engine's (engine.services["nsfw_gate"]), so two engines in one process each
have their own; an engine that was never configured shows every image."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np

from analysers import nsfw
from engine import Engine

SERVICE = "nsfw_gate"


@dataclass
class GatePolicy:
    enabled: bool = False
    threshold: float = 0.8


def configure(engine: Engine, mode: str, threshold: float, shared: bool) -> GatePolicy:
    """mode 'auto' turns the gate on exactly when the app is served on a public link."""
    if mode not in ("auto", "on", "off"):
        raise ValueError("--nsfw-gate must be auto, on or off")
    policy = GatePolicy(enabled=mode == "on" or (mode == "auto" and shared), threshold=threshold)
    engine.services[SERVICE] = policy
    return policy


def policy(engine: Engine) -> GatePolicy:
    """The engine's gate policy; off when it was never configured."""
    return engine.services.get(SERVICE) or GatePolicy()


def gate_output(engine: Engine, image: np.ndarray | None) -> np.ndarray | None:
    """The image as it may be shown: unchanged, or blurred with a notice when it scores high."""
    gate = policy(engine)
    if image is None or not gate.enabled:
        return image
    # The classifier always sees 224x224: one input-size bucket covers every image.
    with engine.run("nsfw_gate") as run:
        shown, notice = nsfw.gate(run.call, image, gate.threshold)
    if notice:
        gr.Warning(notice)
    return shown
