"""One module per capability. Each has TITLE, unavailable() -> reason or None, and build(engine)."""
from . import audio, background, faces, generate, models, nsfw, ocr, segment, style, upscale

TABS = [faces, background, style, upscale, ocr, nsfw, audio, generate, segment, models]
