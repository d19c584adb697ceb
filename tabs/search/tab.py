"""Search: what the app has transcribed or read, and texts you add, found by meaning."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from engine import Engine, UserFacingError
from ui import outputs
from ui.components import on_click_queued, run_button

from . import check
from . import index as search_index
from . import model as embedder
from .passages import TEXT_SUFFIXES

NOTHING_YET = ("Nothing is indexed yet: transcribe a recording or make subtitles from a video's text "
               "(their results are indexed when you search), or add texts below.")
COLUMNS = ["score", "source", "at", "text"]


def _refreshed(engine: Engine, run) -> search_index.SearchIndex:
    """The engine's index, with finished jobs and recent transcriptions read in if new."""
    index = search_index.for_engine(engine)
    index.refresh(run.call, engine.jobs.list(), outputs.ROOT)
    return index


def search_texts(engine: Engine, query: str, top_k: int = 5) -> tuple[pd.DataFrame, dict]:
    """Find passages by meaning in what the app has transcribed or read, and in added texts.

    Finished speech-to-text and video-text (OCR) jobs, and transcriptions of the last few hours,
    are read into the index before each search (only new or changed ones are embedded).

    Args:
        query: what you are looking for, in your own words (English); it need not share words
            with the passage.
        top_k: how many passages to return, best first (1 to 50).

    Returns:
        A table (score, source, at, text) and JSON {"hits": [{"score" (cosine similarity,
        -1 to 1), "text", "source" (e.g. "recording meeting.wav (job 3f2a...)"), "source_id",
        "kind" ("speech", "subtitles" or "text"), "start", "end" (seconds, null for untimed
        text), "at" (the start as 01:23, or null)}], "indexed": {"sources", "passages",
        "vectors"}}.
    """
    check({"query": query, "top_k": top_k}, {})
    with engine.run(embedder.CAPABILITY) as run:
        index = _refreshed(engine, run)
        if not index.summary()["passages"]:
            raise UserFacingError(NOTHING_YET)
        hits = index.search(run.call, query.strip(), int(top_k))
    table = pd.DataFrame([[h["score"], h["source"], h["at"] or "", h["text"]] for h in hits], columns=COLUMNS)
    return table, {"hits": hits, "indexed": index.summary()}


def add_texts(engine: Engine, text: str | None = None, file: str | None = None, title: str = "") -> tuple[str, dict]:
    """Add texts to the search index: pasted text and/or a .txt, .md or .srt file.

    Text is cut into passages by paragraph (long ones between sentences); an .srt file by its
    cues, so hits in it carry their time. Adding the same text again changes nothing.

    Args:
        text: text to add (paragraphs separated by blank lines).
        file: a UTF-8 .txt, .md or .srt file to add.
        title: what hits in the pasted text are shown as coming from (default: its first words).
            A file is shown by its name.

    Returns:
        A sentence saying what was added, and JSON {"added": [{"source_id", "source",
        "passages", "new"}], "indexed": {"sources", "passages", "vectors"}}.
    """
    check({}, {"text": text, "file": file})
    items = []
    if text and text.strip():
        words = text.split()
        label = title.strip() or "pasted text: " + " ".join(words[:6]) + (" …" if len(words) > 6 else "")
        items.append((label, "pasted.txt", text))
    if file:
        path = Path(file)
        items.append((path.name, path.name, path.read_bytes().decode("utf-8-sig")))
    added = []
    with engine.run(embedder.CAPABILITY) as run:
        index = search_index.for_engine(engine)
        for label, name, body in items:
            source, new = index.add_text(run.call, label, name, body)
            added.append({"source_id": source["id"], "source": source["label"],
                          "passages": len(source["passages"]), "new": new})
    if not any(a["passages"] for a in added):
        raise UserFacingError("No text was found in what you gave: nothing was added.")
    lines = [f"{a['source']}: {a['passages']} passages" + ("" if a["new"] else " (already indexed)")
             for a in added]
    summary = index.summary()
    message = "; ".join(lines) + f". The index holds {summary['passages']} passages from {summary['sources']} sources."
    return message, {"added": added, "indexed": summary}


def build(engine: Engine) -> None:
    gr.Markdown("Search by meaning (all-MiniLM-L6-v2) in what the app has transcribed or read: finished "
                "speech-to-text and video-text jobs and the last hours' transcriptions are indexed when "
                "you search, and hits in them say when it was said. You can add texts of your own too.")
    with gr.Row():
        with gr.Column():
            query = gr.Textbox(label="Looking for", placeholder="e.g. when is the budget due?", lines=2)
            top_k = gr.Slider(1, 20, value=5, step=1, label="Results")
            go = run_button("Search")
        with gr.Column():
            with gr.Accordion("Add texts", open=False):
                text = gr.Textbox(label="Text", lines=6, placeholder="paragraphs separated by blank lines")
                title = gr.Textbox(label="Title (for pasted text)")
                file = gr.File(label="Or a file (.txt, .md, .srt)", file_types=list(TEXT_SUFFIXES), type="filepath")
                add = gr.Button("Add to the index")
                added = gr.Markdown(label="Added")
                added_json = gr.JSON(label="Added (JSON)", visible=False)
    hits = gr.Dataframe(headers=COLUMNS, label="Passages found", wrap=True, interactive=False)
    details = gr.JSON(label="Hits (JSON)", open=False)
    # Queued: both wait on the embedder's lease, and a search may first embed new job results.
    on_click_queued(engine, go, search_texts, "search", [query, top_k], [hits, details], api_name="search_texts")
    on_click_queued(engine, add, add_texts, "add the texts", [text, file, title], [added, added_json],
                    api_name="add_texts")
