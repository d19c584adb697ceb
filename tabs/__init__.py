"""One module per capability. Each has TITLE, unavailable() -> reason or None, and build(engine)."""
from . import faces, nsfw, ocr, style

TABS = [faces, style, ocr, nsfw]
