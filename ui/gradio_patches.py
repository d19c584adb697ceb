"""Where Wimmel changes Gradio's own behaviour, all in one place. Checked against Gradio 6.31.0
(requirements.txt pins it): on an upgrade, read the Gradio functions named below again.

1. Image uploads (`guard_image_inputs`): gr.Image.preprocess and
   gr.ImageEditor.convert_and_format_image decode through engine.media.image instead of handing
   the file to PIL as it is. Our decoder caps the pixel count (PIL decodes a 144-megapixel PNG
   of zeros in full), turns any colour mode (CMYK, 16-bit, palette, alpha) into 8-bit L, RGB or
   RGBA properly, and refuses empty, truncated, foreign and oversized files with a plain message
   that names the input. Every gr.Image and gr.ImageEditor of the app is covered, so a new tab
   needs to do nothing.

2. Cache writes (`make_cache_writes_atomic`): Gradio names the cache file of a returned picture,
   sound or byte string by a hash of its content and writes it in place (processing_utils:
   save_pil_to_cache, save_bytes_to_cache, save_audio_to_cache). Two requests that return the
   same content write the same path, and a rewrite in place truncates the file while the first
   user's browser may still be downloading it. Ours stage the file under a private name and
   rename it into place, as Gradio's own save_file_to_cache already does: a reader keeps the
   whole old file, a writer that fails leaves nothing behind.

3. Shown files (`note_shown_files`): gr.Blocks.process_api, which runs every event, hands the
   event's processed outputs to ui.shown_files.record with the user the event ran for, so that
   app.job_files can serve a result copied into Gradio's cache to that user only.

All patch Gradio's classes and module for the whole process (see each function for why), and
all are idempotent: `patch_gradio(demo)` applies them.
"""
from __future__ import annotations

import base64
import binascii
import functools
import inspect
import logging
import os
import tempfile
from pathlib import Path

import gradio as gr
from gradio import image_utils
from gradio import processing_utils as pu
from PIL import Image

from engine.files import atomic_write
from engine.media.image import ImageError, convert, describe, open_image

from . import shown_files, users

log = logging.getLogger(__name__)

GRADIO_CHECKED = "6.31.0"


def patch_gradio(demo: gr.Blocks | None = None) -> None:
    """Apply every patch of this module (app.build_app calls it once the app is built)."""
    guard_image_inputs(demo)
    make_cache_writes_atomic()
    note_shown_files()


# ---------------------------------------------------------------------------------- image uploads

_WHAT = "image"   # messages say "the image"; the input's label is put in front


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
        return pu.save_pil_to_cache(convert(image, mode, flatten), cache_dir=component.GRADIO_CACHE,
                                    name=_stem(payload), format="png")
    return image_utils.format_image(convert(image, mode, flatten), type=component.type,
                                    cache_dir=component.GRADIO_CACHE, name=_stem(payload), format="png")


def _decode(component, payload, flatten: bool = True):
    source = _source(payload)
    return _formatted(component, payload, open_image(source, _WHAT), source, flatten)


def _refusal(component, exc: Exception) -> gr.Error:
    """The message for an image that could not be decoded: ours, or a plain one for a bug.
    Uploads are decoded before any handler runs, so this is their one translation."""
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


# ---------------------------------------------------------------------------------- cache writes

def _publish(final: Path, write) -> str:
    """Call write(staging_path), then move the staged file to `final` in one step."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(final, final.suffix) as staging:
        write(staging)
    return str(final.resolve())


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    data = pu.encode_pil_to_bytes(img, format)
    return _publish(Path(cache_dir) / pu.hash_bytes(data) / f"{name}.{format}", lambda p: Path(p).write_bytes(data))


def save_bytes_to_cache(data: bytes, file_name: str, cache_dir: str) -> str:
    if not Path(file_name).suffix:
        file_name += pu.detect_audio_format(data)
    return _publish(Path(cache_dir) / pu.hash_bytes(data) / Path(file_name).name,
                    lambda p: Path(p).write_bytes(data))


# Gradio's own writers, kept before make_cache_writes_atomic replaces them (save_audio_to_cache
# below calls its original; tests show the race on the originals).
GRADIO_WRITERS = {name: getattr(pu, name) for name in ("save_pil_to_cache", "save_bytes_to_cache",
                                                       "save_audio_to_cache")}


def save_audio_to_cache(data, sample_rate: int, format: str, cache_dir: str) -> str:
    # Gradio's own function picks the hashed path and encodes; it is pointed at a private
    # folder and its file then moved to where Gradio would have put it.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".audio-") as private:
        written = Path(GRADIO_WRITERS["save_audio_to_cache"](data, sample_rate, format, private))
        final = Path(cache_dir) / written.relative_to(Path(private).resolve())
        return _publish(final, lambda p: os.replace(written, p))


def make_cache_writes_atomic() -> None:
    """Replace Gradio's in-place cache writers with the staged ones above. Idempotent; every
    caller in Gradio reaches them through the module (processing_utils.save_...)."""
    pu.save_pil_to_cache = save_pil_to_cache
    pu.save_bytes_to_cache = save_bytes_to_cache
    pu.save_audio_to_cache = save_audio_to_cache


# ---------------------------------------------------------------------------------- shown files

_PROCESS_API = gr.Blocks.process_api
_PROCESS_API_PARAMETERS = inspect.signature(_PROCESS_API)


async def _process_api(self, *args, **kwargs):
    result = await _PROCESS_API(self, *args, **kwargs)
    if users.logins_required() and isinstance(result, dict):
        request = _PROCESS_API_PARAMETERS.bind(self, *args, **kwargs).arguments.get("request")
        # A batched event carries one request per input; its outputs went to all of them.
        for one in request if isinstance(request, list) else [request]:
            shown_files.record(users.user_of(one), result.get("data"), self.GRADIO_CACHE)
    return result


def note_shown_files() -> None:
    """Wrap gr.Blocks.process_api (every event of every Blocks passes through it, streamed steps
    included) to note who was shown which cached file. Idempotent."""
    gr.Blocks.process_api = functools.wraps(_PROCESS_API)(_process_api)
