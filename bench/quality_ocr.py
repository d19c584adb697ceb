"""OCR quality on real text images (issue 19, docs/quality.md): the character error rate of
tabs/ocr (RapidOCR, PP-OCRv4) on the photos and scans committed in tests/data/ocr_real/, whose
text was typed by hand (truth.json there; README.md names each file's source and licence).

Each image goes through the engine as the tab's read_text does (tabs.ocr.model.read_text, RGB
uint8). The lines it returns (top to bottom, left to right, the model's own order) are joined
with a space, as are the typed lines; then both are normalised the same way:

- Unicode NFKC (the book page's "fi" ligature and a plain "fi" are one text), and
- every run of whitespace made one space, leading and trailing space removed.

CER = Levenshtein distance over characters / characters of the reference (insertions count, so
it can pass 1). Case is kept; the same is also reported case-folded (str.casefold), since many
signs are in capitals and the recogniser is sometimes unsure of case in stylised fonts. Word
error rate: the same distance over words (split on spaces) / reference words. Word recall:
the share of reference words found among the words read, ignoring order (a scene's reading
order is a matter of layout, not of reading).

Pooled rates add the edits of every image and divide by all reference characters (the three
page-sized texts weigh most: about 3,600 of the 4,000 characters), so the scene photos are also
reported on their own, as is the mean over images.
"""
from __future__ import annotations

import json
import time
import unicodedata
from pathlib import Path

import numpy as np

from bench.quality_data import bench_call

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "tests" / "data" / "ocr_real"
# Full pages of printed text; the rest are photos of signs (scenes) and cropped words.
DOCUMENTS = ("imageTextN.png", "imageTextR.png", "eurotext.png")


def truth() -> dict[str, list[str]]:
    """image name -> its typed lines; an entry that is a name reuses that image's lines."""
    images = json.loads((FOLDER / "truth.json").read_text(encoding="utf-8"))["images"]
    return {name: images[lines] if isinstance(lines, str) else lines for name, lines in images.items()}


def load_image(name: str) -> np.ndarray:
    """RGB uint8, as the app's image input gives it (palette PNGs converted)."""
    from PIL import Image

    with Image.open(FOLDER / name) as image:
        return np.asarray(image.convert("RGB"))


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def distance(a, b) -> int:
    """Levenshtein distance between two sequences (strings, or lists of words), one numpy row at
    a time: substitutions and deletions from the previous row, then insertions as a running
    minimum along the row (new[j] = min over k <= j of tmp[k] + j - k)."""
    if not a or not b:
        return max(len(a), len(b))
    vocab = {x: i for i, x in enumerate(set(a) | set(b))}
    b_codes = np.array([vocab[x] for x in b])
    steps = np.arange(len(b) + 1)
    row = steps.copy()
    for i, x in enumerate(a, 1):
        tmp = np.empty_like(row)
        tmp[0] = i
        tmp[1:] = np.minimum(row[1:] + 1, row[:-1] + (b_codes != vocab[x]))
        row = np.minimum.accumulate(tmp - steps) + steps
    return int(row[-1])


def score(reference: str, read: str) -> dict:
    """Edit counts of one image: characters (as is and case-folded), words, words found."""
    ref, hyp = normalise(reference), normalise(read)
    ref_words, hyp_words = ref.split(), hyp.split()
    left = list(hyp_words)
    found = 0
    for word in ref_words:
        if word in left:
            left.remove(word)
            found += 1
    return {"chars": len(ref), "char_edits": distance(ref, hyp),
            "char_edits_casefold": distance(ref.casefold(), hyp.casefold()),
            "words": len(ref_words), "word_edits": distance(ref_words, hyp_words), "words_found": found}


def pooled(rows: list[dict]) -> dict:
    chars, words = sum(r["chars"] for r in rows), sum(r["words"] for r in rows)
    return {"images": len(rows), "chars": chars, "words": words,
            "cer": round(sum(r["char_edits"] for r in rows) / chars, 4),
            "cer_casefold": round(sum(r["char_edits_casefold"] for r in rows) / chars, 4),
            "wer": round(sum(r["word_edits"] for r in rows) / words, 4),
            "word_recall": round(sum(r["words_found"] for r in rows) / words, 4),
            "mean_image_cer": round(float(np.mean([r["char_edits"] / r["chars"] for r in rows])), 4)}


def bootstrap_cer(rows: list[dict], draws: int = 2000, seed: int = 0) -> dict:
    """Spread of the pooled CER over the images: resample the images with replacement."""
    rng = np.random.default_rng(seed)
    edits = np.array([r["char_edits"] for r in rows], dtype=float)
    chars = np.array([r["chars"] for r in rows], dtype=float)
    picks = rng.integers(0, len(rows), size=(draws, len(rows)))
    cers = edits[picks].sum(axis=1) / chars[picks].sum(axis=1)
    return {"sd": round(float(cers.std()), 4), "p5": round(float(np.percentile(cers, 5)), 4),
            "p95": round(float(np.percentile(cers, 95)), 4)}


def read_all(call, names: list[str], border: int | None = None) -> dict[str, list[dict]]:
    """The lines tabs/ocr reads in each image (one engine call per image, as the tab makes);
    border: the edge-coloured margin read_text adds (None: the app's, 0: none, as first measured)."""
    from tabs.ocr import model as ocr

    border = ocr.BORDER if border is None else border
    return {name: call(ocr.OCR, lambda model, image=load_image(name): ocr.read_text(model, image, border))
            for name in names}


def rows_of(found: dict[str, list[dict]], typed: dict[str, list[str]]) -> dict[str, dict]:
    rows = {}
    for name, lines in found.items():
        read = " ".join(line["text"] for line in lines)
        rows[name] = {**score(" ".join(typed[name]), read), "read": normalise(read)}
    return rows


def summary(rows: dict[str, dict]) -> dict:
    scenes = [r for n, r in rows.items() if n not in DOCUMENTS]
    documents = [r for n, r in rows.items() if n in DOCUMENTS]
    return {"all": {**pooled(list(rows.values())), "bootstrap": bootstrap_cer(list(rows.values()))},
            "scenes": {**pooled(scenes), "bootstrap": bootstrap_cer(scenes)},
            "documents": pooled(documents)}


def run(verbose: bool = True) -> dict:
    from tabs.ocr import specs

    call = bench_call(specs())

    typed = truth()
    started = time.perf_counter()
    rows = rows_of(read_all(call, list(typed)), typed)
    seconds = time.perf_counter() - started
    unbordered = summary(rows_of(read_all(call, list(typed), 0), typed))
    result = {"data": "tests/data/ocr_real (opencv-doc 4.6.0 text photos and book page, tesserocr eurotext)",
              **summary(rows), "per_image": rows, "without_border": unbordered, "seconds": round(seconds, 1)}
    if verbose:
        for name, r in rows.items():
            print(f"ocr {name}: CER {r['char_edits'] / r['chars']:.1%} "
                  f"(case-folded {r['char_edits_casefold'] / r['chars']:.1%}) over {r['chars']} chars, "
                  f"WER {r['word_edits'] / r['words']:.1%}; read {r['read'][:70]!r}")
        for group in ("all", "scenes", "documents"):
            g = result[group]
            spread = f", bootstrap sd {g['bootstrap']['sd']:.1%}" if "bootstrap" in g else ""
            b = unbordered[group]
            print(f"ocr pooled {group}, read without the border (as first measured): CER {b['cer']:.1%}, "
                  f"word recall {b['word_recall']:.1%}")
            print(f"ocr pooled {group}: {g['images']} images, {g['chars']} chars: CER {g['cer']:.1%} "
                  f"(case-folded {g['cer_casefold']:.1%}{spread}), mean per image {g['mean_image_cer']:.1%}; "
                  f"WER {g['wer']:.1%}, word recall {g['word_recall']:.1%}")
    return result


if __name__ == "__main__":
    run()
