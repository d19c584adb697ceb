"""Folders for the files a tab hands back (WAVs, SRTs, cut videos). Gradio copies a returned file
into its own cache, so ours are only needed for a while: folders older than a few hours are
swept away whenever a new one is made, instead of piling up in /tmp."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(tempfile.gettempdir()) / "wimmel-outputs"
KEEP_S = 6 * 3600


def sweep(now: float | None = None) -> int:
    """Delete output folders older than KEEP_S; returns how many went."""
    now = now or time.time()
    gone = 0
    for folder in ROOT.glob("*/*"):
        try:
            if now - folder.stat().st_mtime > KEEP_S:
                shutil.rmtree(folder, ignore_errors=True)
                gone += 1
        except FileNotFoundError:
            pass   # another request swept it first
    return gone


def new_output_dir(kind: str) -> Path:
    """A fresh folder for one request's files, e.g. new_output_dir('tts')."""
    sweep()
    (ROOT / kind).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="", dir=ROOT / kind))
