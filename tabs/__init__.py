"""One module per capability. Each has TITLE, unavailable() -> reason or None, and build(engine)."""
from . import faces, nsfw, ocr, style, upscale

TABS = [faces, style, upscale, ocr, nsfw]
