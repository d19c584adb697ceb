"""Entities: names, places, dates and amounts in English text, and each word's part of speech,
lemma and place in its sentence (spaCy en_core_web_sm)."""
from __future__ import annotations

import collections

import gradio as gr
import pandas as pd

from engine import Engine
from ui.components import on_click, text_from_app, run_button

from . import check
from . import model as spacy_model

ENTITY_COLUMNS = ["entity", "type", "meaning", "times", "first at"]
TOKEN_COLUMNS = ["#", "token", "part of speech", "tag", "lemma", "dependency", "head", "head #", "sentence"]


def _entity_table(entities: list[dict]) -> pd.DataFrame:
    """One row per distinct (text, type), in order of first mention, with how often it occurs."""
    seen: dict[tuple[str, str], list] = {}
    counts = collections.Counter((e["text"], e["label"]) for e in entities)
    for e in entities:
        key = (e["text"], e["label"])
        if key not in seen:
            seen[key] = [e["text"], e["label"], e["meaning"], counts[key], e["start"]]
    return pd.DataFrame(list(seen.values()), columns=ENTITY_COLUMNS)


def _token_table(tokens: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([[t["index"], t["text"], t["pos"], t["tag"], t["lemma"], t["dep"], t["head"],
                          t["head_index"], t["sentence"]] for t in tokens], columns=TOKEN_COLUMNS)


def find_entities(engine: Engine, text: str | None, parse: bool = True):
    """Names, places, dates, amounts and other named entities in English text; with parse, each
    word's part of speech, lemma and dependency (its head word and relation), and each sentence's
    main word (spaCy en_core_web_sm 3.8).

    Args:
        text: English text: typed, a transcript or OCR output, up to 200,000 characters. Long
            text is read paragraph by paragraph.
        parse: true: parts of speech, lemmas and the dependency parse too; false: entities only
            (about twice as fast).

    Returns:
        The text with its entities highlighted; a table of distinct entities (entity, type,
        meaning, times, first at: character offset); a table of tokens (empty without parse);
        and JSON {"entities": [{"text", "label" (PERSON, NORP, FAC, ORG, GPE, LOC, PRODUCT,
        EVENT, WORK_OF_ART, LAW, LANGUAGE, DATE, TIME, PERCENT, MONEY, QUANTITY, ORDINAL,
        CARDINAL), "meaning", "start", "end"}], "tokens": [{"index", "text", "pos" (universal
        part of speech), "tag" (Penn Treebank), "lemma", "dep", "head", "head_index",
        "sentence", "start"}] (the first 10,000), "sentences": [{"text", "start", "end", "root",
        "root_pos", "root_index"}], "token_count", "tokens_listed"}. Offsets count characters
        of the text; whitespace is not a token.
    """
    parse = bool(parse)
    check({"text": text, "parse": parse}, {})
    with engine.run("find_entities", bucket=spacy_model.chars_bucket(len(text))) as run:
        result = spacy_model.analyse(run.call, text, parse)
    if parse and result["tokens_listed"] < result["token_count"]:
        gr.Info(f"The text has {result['token_count']:,} tokens: the first {result['tokens_listed']:,} "
                "are listed. Every entity is.")
    highlighted = {"text": text, "entities": [{"entity": e["label"], "start": e["start"], "end": e["end"]}
                                              for e in result["entities"]]}
    return highlighted, _entity_table(result["entities"]), _token_table(result["tokens"]), result


def build(engine: Engine) -> None:
    gr.Markdown("Names, places, organisations, dates, amounts and other named entities in English "
                "text, and each word's part of speech, lemma and role in its sentence (spaCy's "
                "en_core_web_sm). Paste a text, a transcript or what was read from an image.")
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="English text", lines=8, max_length=spacy_model.MAX_CHARS,
                              placeholder="Eileen Collins commanded the Space Shuttle Columbia for "
                                          "NASA in July 1999.")
            text_from_app(engine, text)
            parse = gr.Checkbox(value=True, label="Parts of speech and sentence structure too")
            go = run_button("Find entities")
        with gr.Column():
            marked = gr.HighlightedText(label="Entities in the text", show_legend=True)
            entities = gr.Dataframe(headers=ENTITY_COLUMNS, label="Entities", interactive=False, wrap=True)
    tokens = gr.Dataframe(headers=TOKEN_COLUMNS, label="Words: part of speech, lemma, dependency and head",
                          interactive=False)
    details = gr.JSON(label="Entities, words and sentences (JSON)", open=False)
    on_click(engine, go, find_entities, "find entities", [text, parse], [marked, entities, tokens, details],
             api_name="find_entities")
