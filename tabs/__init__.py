"""One module per capability. Each has TITLE, unavailable() -> reason or None, and build(engine)."""
from . import audio, background, faces, nsfw, ocr, style, upscale

TABS = [faces, background, style, upscale, ocr, nsfw, audio]
