"""Language of a text: fastText's lid.176 (176 languages), the whole text or line by line."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from engine import Engine
from ui.components import on_click, text_from_app, run_button

from . import check
from . import model as lid

PREVIEW_CHARS = 60  # a line's text in the by-line table; the JSON has it whole


def _table(result: dict) -> pd.DataFrame:
    if "lines" not in result:
        return pd.DataFrame([[x["name"], x["code"], x["probability"]] for x in result["languages"]],
                            columns=["language", "code", "probability"])
    rows = []
    for line in result["lines"]:
        best = line["languages"][0] if line["languages"] else {"name": "(unknown)", "code": "", "probability": None}
        text = line["text"] if len(line["text"]) <= PREVIEW_CHARS else line["text"][:PREVIEW_CHARS] + "…"
        rows.append([line["line"], text, best["name"], best["code"], best["probability"]])
    return pd.DataFrame(rows, columns=["line", "text", "language", "code", "probability"])


def detect_language(engine: Engine, text: str | None, top_k: int = 3, by_line: bool = False):
    """The language of a text (fastText lid.176: 176 languages), with probabilities.

    Args:
        text: the text: typed, a transcript or OCR output, up to 200,000 characters. A sentence
            or more is reliable; one or two words often are not.
        top_k: how many of the most likely languages to list (1 to 176).
        by_line: false: the whole text is one answer (line breaks count as spaces); true: each
            non-blank line gets its own answer (for texts that mix languages line by line).

    Returns:
        A table, and JSON {"languages": [{"code" (ISO 639-1, else 639-3, e.g. "de", "ceb"),
        "name" (English), "probability"}, ...]} best first; with by_line, {"lines": [{"line"
        (1-based), "text", "languages": [...]}, ...]}. Where the model knows none of a text's
        words, "languages" is empty and "note" says why.
    """
    params = {"text": text, "top_k": top_k, "by_line": bool(by_line)}
    check(params, {})
    with engine.run("detect_language", bucket=lid.chars_bucket(len(text))) as run:
        result = lid.detect(run.call, text, int(top_k), bool(by_line))
    if result.get("note"):
        gr.Info(result["note"])
    return _table(result), result


def build(engine: Engine) -> None:
    gr.Markdown("Which language a text is in, from fastText's language identifier (176 languages). "
                "A sentence or more is reliable; single words often are not. Line by line gives each "
                "line its own answer.")
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Text", lines=6, max_length=lid.MAX_CHARS,
                              placeholder="Der Zug nach Hamburg hat heute zwanzig Minuten Verspätung.")
            text_from_app(engine, text)
            top_k = gr.Slider(1, 10, value=3, step=1, label="Languages to list")
            by_line = gr.Checkbox(value=False, label="Line by line")
            go = run_button("Detect the language")
        with gr.Column():
            table = gr.Dataframe(label="Languages", interactive=False)
            details = gr.JSON(label="Languages (JSON)", open=False)
    on_click(engine, go, detect_language, "detect the language", [text, top_k, by_line], [table, details],
             api_name="detect_language")
