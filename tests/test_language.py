"""Language of a text: lid.176.ftz read by our own reader into torch, held to fastText's own
answers (tests/data/langid/reference.json, made by make_reference.py with fasttext-predict)."""
import hashlib
import json
import struct
from pathlib import Path

import gradio as gr
import pytest
from app_calls import endpoint
import torch

import tabs.language as capability
from capability_engine import capability_engine
from engine import UserFacingError
from tabs.language import model as lid
from tabs.language.fasttext_format import NotAFastTextModel, read_model
from tabs.language.fasttext_torch import build, fnv1a
from tabs.language.names import NAMES

DATA = Path(__file__).parent / "data" / "langid"
SENTENCES = json.loads((DATA / "sentences.json").read_text())
REFERENCE = json.loads((DATA / "reference.json").read_text())
# Measured: at most 1.6e-7 from fastText's probabilities. Both decode the same codes to float32;
# only the order of float additions differs. (The quantization itself costs nothing here: fastText
# runs on the same quantized rows.)
PROB_TOLERANCE = 2e-6


@pytest.fixture(scope="module")
def identifier():
    return lid.load("cpu")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with capability_engine(tmp_path_factory.mktemp("language"), capability.specs(), []) as engine:
        yield engine


@pytest.fixture(scope="module")
def detect_language(engine):
    from tabs.language import tab

    with gr.Blocks() as demo:
        tab.build(engine)
    return endpoint(demo, "detect_language")


def test_the_weights_are_here_and_the_spec_is_torch_on_any_device():
    assert lid.unavailable_reason() is None and capability.unavailable() is None
    (spec,) = capability.specs()
    assert (spec.name, spec.runtime, spec.device, spec.role) == (lid.LANGUAGE_MODEL, "torch", "auto", "interactive")
    assert capability.job_kinds() == []


def test_the_reader_reads_lid176():
    model = read_model(lid.model_path())
    args = model.args
    assert (args["dim"], args["loss"], args["model"], args["minn"], args["maxn"], args["wordNgrams"],
            args["bucket"]) == (16, "hs", "sup", 2, 4, 1, 2_000_000)
    assert model.version == 12 and model.quantized
    assert model.nwords == 7235 and len(model.labels) == 176 and model.words[0] == b"</s>"
    assert len(model.pruneidx) == 42765 and model.input.shape == (7235 + 42765, 16)
    assert model.output.shape == (176, 16)
    codes = {label.decode().removeprefix("__label__") for label in model.labels}
    assert codes == set(NAMES)  # every label has an English name


def test_the_hash_is_fnv1a():
    # Published FNV-1a 32-bit test vectors (ASCII, where fastText's signed bytes change nothing).
    assert fnv1a(b"") == 0x811C9DC5 and fnv1a(b"a") == 0xE40C292C and fnv1a(b"foobar") == 0xBF9CF968


def test_the_model_equals_fasttext_on_every_text(identifier):
    assert REFERENCE["model_sha256"] == hashlib.sha256(lid.model_path().read_bytes()).hexdigest()
    texts = [s["text"] for s in SENTENCES["sentences"]] + SENTENCES["edge"]
    assert [e["text"] for e in REFERENCE["predictions"]] == texts
    worst = 0.0
    for entry in REFERENCE["predictions"]:
        (top3,) = identifier.predict([entry["text"]], k=3)
        (every,) = identifier.predict([entry["text"]], k=-1)
        assert [code for code, _ in top3] == entry["labels"][:3], entry["text"]
        # Every label fastText reports (probability >= 1e-5), in its order: 9 to 176 per text.
        assert [code for code, _ in every] == entry["labels"], entry["text"]
        worst = max(worst, max(abs(p - q) for (_, p), q in zip(every, entry["probs"])))
    assert worst < PROB_TOLERANCE


def test_lines_in_one_batch_equal_lines_one_by_one(identifier):
    texts = [s["text"] for s in SENTENCES["sentences"][:20]] + ["Hi", ""]
    batch = identifier.scores(texts)
    single = torch.cat([identifier.scores([t]) for t in texts])
    assert torch.allclose(batch, single, atol=1e-6)


def test_the_probabilities_over_all_languages_sum_to_one(identifier):
    # Each of the ~10 tree nodes on a label's path adds 1e-5 (fastText's log(p + 1e-5)).
    total = identifier.scores(["Wir fahren morgen früh nach Berlin."]).exp().sum().item()
    assert 0.9999 < total < 1.002


def test_top1_accuracy_on_78_sentences_in_26_languages(identifier):
    sentences = SENTENCES["sentences"]
    assert len(sentences) == 78 and len({s["lang"] for s in sentences}) == 26
    answers = identifier.predict([s["text"] for s in sentences], k=1)
    right = [s["lang"] == pairs[0][0] for s, pairs in zip(sentences, answers)]
    # Measured 77 of 78 (98.7 %): one Indonesian question is taken for Malay (0.53 against 0.41).
    assert sum(right) / len(right) >= 0.95


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"\x89PNG\r\n\x1a\n" + b[8:], "not a fastText model"),
    (lambda b: b[:100_000], "truncated"),
    (lambda b: b[:4] + struct.pack("<i", 13) + b[8:], "version 13"),
    (lambda b: b + b"\0\0\0\0", "bytes after the model"),
    (lambda b: b"", "not a fastText model"),
])
def test_the_reader_refuses_what_is_not_lid176(tmp_path, damage, message):
    bad = tmp_path / "model.ftz"
    bad.write_bytes(damage(lid.model_path().read_bytes()))
    with pytest.raises(NotAFastTextModel, match=message):
        read_model(bad)


@pytest.mark.parametrize("offset, value, message", [
    (8 + 6 * 4, 3, "only the hierarchical softmax"),   # loss: softmax
    (8 + 7 * 4, 1, "cbow model gives word vectors"),   # model: cbow
    (8 + 5 * 4, 2, "word n-grams"),                    # wordNgrams 2
])
def test_models_this_code_cannot_run_are_refused(tmp_path, offset, value, message):
    data = bytearray(lid.model_path().read_bytes())
    data[offset:offset + 4] = struct.pack("<i", value)
    changed = tmp_path / "changed.ftz"
    changed.write_bytes(bytes(data))
    with pytest.raises(NotAFastTextModel, match=message):
        build(read_model(changed))


def test_detect_language_names_the_language(detect_language):
    table, result = detect_language("Der Zug nach Hamburg hat heute leider eine Verspätung.", 3, False)
    best = result["languages"][0]
    assert (best["code"], best["name"]) == ("de", "German") and best["probability"] > 0.9
    assert len(result["languages"]) == 3 and list(table["code"]) == [x["code"] for x in result["languages"]]
    assert all(0 < x["probability"] <= 1 for x in result["languages"])


def test_line_by_line_gives_each_line_its_language(detect_language):
    text = "Nous avons dîné dans un petit restaurant.\n\nWe walked home in the rain.\nПривет, как дела?\nHi"
    table, result = detect_language(text, 1, True)
    lines = result["lines"]
    assert [x["line"] for x in lines] == [1, 3, 4, 5]   # the blank line 2 is left out
    assert [x["languages"][0]["code"] for x in lines[:3]] == ["fr", "en", "ru"]
    assert lines[3]["languages"] == [] and "too little text" in lines[3]["note"]  # 'Hi' is unknown to it
    assert list(table["language"]) == ["French", "English", "Russian", "(unknown)"]
    # The same text as a whole: one answer.
    _, whole = detect_language(text, 2, False)
    assert len(whole["languages"]) == 2 and "lines" not in whole


def test_text_in_capitals_is_read_lower_cased(detect_language, identifier):
    shout = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG AND RUNS AWAY"
    # fastText knows none of these capitalised words: its answer is only its prior (en at 0.12).
    assert identifier.known(shout) == 0
    _, result = detect_language(shout, 1, False)
    assert result["languages"][0]["code"] == "en" and result["languages"][0]["probability"] > 0.8


@pytest.mark.parametrize("text, top_k, message", [
    ("", 3, "Type or paste some text"),
    ("   \n\t ", 3, "Type or paste some text"),
    (None, 3, "Type or paste some text"),
    ("12345 !!! 😊", 3, "no letters"),
    ("Bonjour tout le monde", 0, "from 1 to 176"),
    ("Bonjour tout le monde", 2.5, "from 1 to 176"),
    ("a" * (lid.MAX_CHARS + 1), 3, "at most 200,000"),
])
def test_plain_messages_for_what_cannot_be_read(detect_language, text, top_k, message):
    with pytest.raises(gr.Error, match=message):
        detect_language(text, top_k, False)


def test_check_refuses_what_is_not_text():
    with pytest.raises(UserFacingError, match="must be text, not bytes"):
        capability.check({"text": b"Hallo Welt"}, {})
    with pytest.raises(UserFacingError, match="must be text, not list"):
        capability.check({"text": ["Hallo"]}, {})
    capability.check({"text": "Hallo Welt", "top_k": 176, "by_line": True}, {})  # accepted


def test_the_endpoint_has_a_docstring_for_mcp():
    from tabs.language.tab import detect_language

    doc = detect_language.__doc__
    assert "Args:" in doc and "Returns:" in doc
    for name in ("text:", "top_k:", "by_line:"):
        assert name in doc


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_on_cuda_the_same_top3_as_fasttext():
    gpu = lid.load("cuda:0")
    assert gpu.net.nodes_out.device.type == "cuda"
    texts = [e["text"] for e in REFERENCE["predictions"]]
    for entry, pairs in zip(REFERENCE["predictions"], gpu.predict(texts, k=3)):
        assert [c for c, _ in pairs] == entry["labels"][:3]
        assert max(abs(p - q) for (_, p), q in zip(pairs, entry["probs"])) < PROB_TOLERANCE
