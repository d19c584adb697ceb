"""Every image input of the app is decoded by our code, not by Gradio's: engine.media.image reads
the upload with a pixel cap, turns any colour mode (CMYK, 16-bit, palette, alpha) into 8-bit L,
RGB or RGBA properly, and refuses empty, truncated, foreign and oversized files with a plain
message naming the input. `guard_image_inputs` puts this in front of each gr.Image and
gr.ImageEditor of a built app, so a new tab is covered without doing anything.
"""
from __future__ import annotations

import base64
import binascii
import logging
from pathlib import Path

import gradio as gr
from gradio import image_utils, processing_utils
from PIL import Image

from engine.media.image import ImageError, convert, describe, open_image

_WHAT = "image"   # messages say "the image"; the input's label is put in front
log = logging.getLogger(__name__)


def _source(payload):
    """The upload's bytes (a data: URL) or its server path."""
    url = getattr(payload, "url", None)
    if url and url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=False)
        except (IndexError, ValueError, binascii.Error) as exc:
            raise ImageError("The image did not arrive whole; upload it again.") from exc
    path = getattr(payload, "path", None)
    if not path:
        raise ImageError("The image did not arrive; upload it again.")
    return path


def _stem(payload) -> str:
    name = getattr(payload, "orig_name", None) or "image"
    return Path(name).stem or "image"


def _formatted(component, payload, image: Image.Image, source, flatten: bool = True):
    """The decoded image as the component's `type` asks: numpy, PIL, or a file path."""
    mode = component.image_mode
    if component.type == "filepath":
        if isinstance(source, str) and mode in (None, image.info.get("source_mode")):
            return source   # checked, and already in the mode the function wants: no copy
        return processing_utils.save_pil_to_cache(convert(image, mode, flatten), cache_dir=component.GRADIO_CACHE,
                                                  name=_stem(payload), format="png")
    return image_utils.format_image(convert(image, mode, flatten), type=component.type,
                                    cache_dir=component.GRADIO_CACHE, name=_stem(payload), format="png")


def _decode(component, payload, flatten: bool = True):
    source = _source(payload)
    return _formatted(component, payload, open_image(source, _WHAT), source, flatten)


def _refusal(component, exc: Exception) -> gr.Error:
    """The message for an image that could not be decoded: ours, or a plain one for a bug."""
    if not isinstance(exc, ImageError):
        log.exception("decoding an uploaded image failed")
        exc = ImageError(f"The {_WHAT} could not be read (an error on the server; its log has the details).")
    return gr.Error(describe(exc, component.label), print_exception=False)


def _image_preprocess(self, payload):
    """gr.Image.preprocess, through our decoder."""
    if payload is None:
        return None
    try:
        return _decode(self, payload)
    except Exception as exc:
        raise _refusal(self, exc) from exc


def _editor_convert(self, file, flatten_on_white: bool = False):
    """gr.ImageEditor's decoding of its background, layers and composite, through our decoder
    (the background and composite in mode RGB on white, as Gradio's flatten_on_white does)."""
    if file is None:
        return None
    try:
        if isinstance(file, (bytes, bytearray, memoryview)):
            image = open_image(bytes(file), _WHAT)
            return image_utils.format_image(convert(image, self.image_mode, flatten_on_white), type=self.type,
                                            cache_dir=self.GRADIO_CACHE, name="image", format="png")
        return _decode(self, file, flatten_on_white)
    except Exception as exc:
        raise _refusal(self, exc) from exc


def guard_image_inputs(demo: gr.Blocks | None = None) -> int:
    """Make every gr.Image and gr.ImageEditor decode uploads with our code; how many `demo` has.

    The methods are replaced on Gradio's classes, for the whole process: an instance-level
    override would be lost when Gradio rebuilds a component from its class after an event
    updates its props (block.__class__(**kwargs)), and a subclass makes Gradio write a .pyi stub
    next to this file at import. Idempotent.
    """
    gr.Image.preprocess = _image_preprocess
    gr.ImageEditor.convert_and_format_image = _editor_convert
    if demo is None:
        return 0
    return sum(isinstance(block, (gr.Image, gr.ImageEditor)) for block in demo.blocks.values())
