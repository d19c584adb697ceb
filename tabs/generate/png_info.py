"""Generation parameters in a PNG: A1111's 'parameters' text chunk, written and read back."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from engine.files import atomic_write

_PARAM = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',\n:"') else text


def format_parameters(prompt: str, negative_prompt: str, fields: dict) -> str:
    """A1111's 'parameters' text: the prompt, 'Negative prompt: ...', then 'Key: value, ...'."""
    lines = [prompt.strip()]
    if negative_prompt and negative_prompt.strip():
        lines.append(f"Negative prompt: {negative_prompt.strip()}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields.items()))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict:
    """The reverse of format_parameters (also reads A1111's own): prompt, negative_prompt, and each
    field; Steps/Seed as int, CFG scale/Denoising strength as float, Size as width/height."""
    lines = text.strip().split("\n")
    fields_line = lines[-1] if len(_PARAM.findall(lines[-1])) >= 3 else ""
    body = lines[:-1] if fields_line else lines
    prompt, negative, in_negative = [], [], False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict[str, Any] = {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip()}
    for key, value in _PARAM.findall(fields_line):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        out[key.strip()] = value
    for key in ("Steps", "Seed"):
        if key in out:
            out[key] = int(out[key])
    for key in ("CFG scale", "Denoising strength"):
        if key in out:
            out[key] = float(out[key])
    if "Size" in out and "x" in str(out["Size"]):
        out["width"], out["height"] = (int(v) for v in str(out["Size"]).split("x"))
    return out


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG with the image's 'parameters' as a text chunk (tEXt, iTXt when not Latin-1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if "parameters" in image.info:
        info.add_text("parameters", image.info["parameters"])
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def read_parameters(path: str | os.PathLike) -> dict:
    """The parameters of a PNG written by save_png (or by A1111), parsed; {} when there are none."""
    with Image.open(path) as img:
        text = getattr(img, "text", {}).get("parameters") or img.info.get("parameters")
    return parse_parameters(text) if text else {}
