"""Speech quality on real recordings (issue 19, docs/quality.md): speech to text, voice activity,
and diarization of the pyannote sample, through the app's own model functions on an engine.

- speech to text: tabs.stt.model.transcribe (Whisper tiny.en, faster-whisper, as the tab calls
  it) on each whole file of bench/sets_speech.py; word error rate (S + D + I) / N against the
  transcripts, per set and pooled. Normalisation, both sides (normalise()): lower case; `[...]`,
  `<...>`, `{...}` annotations dropped; punctuation other than an apostrophe inside a word becomes
  a space; the hesitations Whisper's own English normaliser drops (hmm, mm, mhm, mmm, uh, um)
  dropped; numbers written as digits become words (the transcripts write them as words); the
  titles Whisper's normaliser spells out (mr, mrs, dr) spelt out; `yknow` read as `you know`,
  `all right` as `alright` (spellings of one word, not recognition errors).
  The edit distance is computed here (jiwer, the usual library, is not installed). The
  pyannote sample's file is aligned as a whole and each error is charged to the STM utterance
  of the reference word it touches, so its 13 utterances are units of the bootstrap.
- voice activity: tabs.vad.model.analyse, then segments_of at the app's settings (threshold
  0.5, min speech 0.25 s, min silence 0.1 s, pad 0.03 s, the tab's defaults) and at a sweep of
  thresholds; 10 ms frames, speech = the union of the reference turns (AMI and pyannote-sample
  RTTM) or words (mfa TextGrids), with gaps under GAP_S filled (a pause between words that
  short is part of the speech, as diarization's turn edges treat it). Precision, recall, F1.
- diarization: tabs.voices.model.diarize on the pyannote sample (2 speakers) and on
  conversations joined from single readers (JOINED: turn edges known exactly), DER and boundary
  errors with bench.quality's der() and boundary_errors().
"""
from __future__ import annotations

import re
import time

import numpy as np

from bench import quality as q
from bench import quality_data as qd
from bench import sets_speech as ss

FRAME_S = 0.01
GAP_S = 0.3  # reference pauses shorter than this count as speech
SWEEP = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8)
APP_VAD = {"threshold": 0.5, "min_speech_s": 0.25, "min_silence_s": 0.1, "pad_s": 0.03}
DRAWS = 1000
# Published, not measured here: the openai/whisper-tiny.en model card (huggingface.co, model-index).
PUBLISHED_WER = {"LibriSpeech test-clean": 0.0844, "LibriSpeech test-other": 0.1486}
BLOCK_S = 5.0  # bootstrap unit of the frame F1

# --------------------------------------------------------------------------- word error rate

_FILLERS = {"hmm", "mm", "mhm", "mmm", "uh", "um"}  # whisper/normalizers/english.py ignores these
_SPELLING = {"mr": "mister", "mrs": "missus", "dr": "doctor", "yknow": "you know"}
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0-999 999 in words, as the transcripts write numbers ('twenty five', 'one hundred and six'
    is written without 'and')."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    return number_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_words(n % 1000))


def normalise(text: str) -> list[str]:
    """The words of `text` as scored (module docstring)."""
    text = re.sub(r"\[[^\]]*\]|<[^>]*>|\{[^}]*\}", " ", text.lower().replace("’", "'"))
    text = re.sub(r"\ball right\b", "alright", text)
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)
    text = re.sub(r"[^\w']+|(?<!\w)'|'(?!\w)|_", " ", text)
    words = []
    for word in text.split():
        word = number_words(int(word)) if word.isdigit() and int(word) < 10**6 else _SPELLING.get(word, word)
        words += [w for w in word.split() if w not in _FILLERS]
    return words


def align(ref: list[str], hyp: list[str]) -> list[tuple[str, int]]:
    """Levenshtein alignment: (op, i) with op in ok/sub/del/ins and i the reference word it
    belongs to (an insertion belongs to the reference word before it, or the first)."""
    n, m = len(ref), len(hyp)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]), cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    ops, i, j = [], n, m
    while i or j:
        if i and j and cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("ok" if ref[i - 1] == hyp[j - 1] else "sub", i - 1))
            i, j = i - 1, j - 1
        elif i and cost[i, j] == cost[i - 1, j] + 1:
            ops.append(("del", i - 1))
            i -= 1
        else:
            ops.append(("ins", max(i - 1, 0)))
            j -= 1
    return ops[::-1]


def errors_per_utterance(utterances: list[ss.Utterance], hypothesis: str) -> list[dict]:
    """The utterances of one file against the file's hypothesis: per utterance, its words N and
    substitutions, deletions, insertions charged to it."""
    owner, ref = [], []
    for k, u in enumerate(utterances):
        words = normalise(u.text)
        ref += words
        owner += [k] * len(words)
    counts = [{"n": 0, "sub": 0, "del": 0, "ins": 0} for _ in utterances]
    for k in owner:
        counts[k]["n"] += 1
    for op, i in align(ref, normalise(hypothesis)):
        if op != "ok":
            counts[owner[i] if owner else 0][op] += 1
    return counts


def wer(counts: list[dict]) -> float:
    n = sum(c["n"] for c in counts)
    return sum(c["sub"] + c["del"] + c["ins"] for c in counts) / max(1, n)


def bootstrap(units: list, statistic, draws: int = DRAWS, seed: int = 19) -> dict:
    """sd and 5-95 % of statistic(units resampled with replacement)."""
    rng = np.random.default_rng(seed)
    values = [statistic([units[i] for i in rng.integers(0, len(units), len(units))]) for _ in range(draws)]
    return {"sd": round(float(np.std(values)), 4),
            "p5": round(float(np.percentile(values, 5)), 4), "p95": round(float(np.percentile(values, 95)), 4)}


def transcripts(call) -> dict[str, str]:
    """'set/file' -> the app's transcript text of the file (each file transcribed whole, once)."""
    from tabs.stt import model as stt

    files = {}
    for u in ss.utterances():
        if f"{u.set}/{u.file}" not in files:
            files[f"{u.set}/{u.file}"] = stt.transcribe(call, ss.audio(ss.path_of(u)))["text"]
    return files


def stt_rows(call) -> dict:
    texts = transcripts(call)
    by_set: dict[str, list[dict]] = {}
    files: dict[str, list[ss.Utterance]] = {}
    for u in ss.utterances():
        files.setdefault((u.set, u.file), []).append(u)
    for (name, file), utts in files.items():
        for u, c in zip(utts, errors_per_utterance(utts, texts[f"{name}/{file}"])):
            by_set.setdefault(name, []).append({**c, "file": file, "text": u.text})
    by_set["pooled"] = [c for rows in list(by_set.values()) for c in rows]
    rows = {}
    for name, counts in by_set.items():
        rows[name] = {"utterances": len(counts), "words": sum(c["n"] for c in counts),
                      "wer": round(wer(counts), 4),
                      **{k: sum(c[k] for c in counts) for k in ("sub", "del", "ins")},
                      "bootstrap": bootstrap(counts, wer)}
    return {"sets": rows, "hypotheses": texts}


# --------------------------------------------------------------------------- voice activity

def frames(spans, seconds: float, gap_s: float = 0.0) -> np.ndarray:
    """10 ms frames inside the union of spans (start, end), gaps under gap_s filled."""
    grid = np.zeros(int(round(seconds / FRAME_S)), dtype=bool)
    joined: list[list[float]] = []
    for a, b in sorted(spans):
        if joined and a - joined[-1][1] < gap_s:
            joined[-1][1] = max(joined[-1][1], b)
        else:
            joined.append([a, b])
    for a, b in joined:
        grid[max(0, round(a / FRAME_S)):max(0, round(b / FRAME_S))] = True
    return grid


def vad_files() -> dict[str, list[tuple[str, np.ndarray, list]]]:
    """set -> [(name, samples, reference spans)]."""
    sets = {"ami": [], "pyannote-sample": [], "mfa": []}
    turns = qd.ami_turns()
    for uri in qd.ami_uris():
        sets["ami"].append((uri, qd.ami_audio(uri), [(t.start, t.end) for t in turns[uri]]))
    sets["pyannote-sample"].append(("sample", ss.audio(ss.SAMPLE / "sample.wav"),
                                    [(a, b) for a, b, _ in ss.sample_turns()]))
    for stem in ss.MFA_TIMED:
        sets["mfa"].append((stem, ss.audio(ss.MFA / "wav" / f"{stem}.wav"), [(a, b) for a, b, _ in ss.mfa_words(stem)]))
    return sets


def blocks(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (reference, hypothesis) frames cut into BLOCK_S pieces: the bootstrap's units, so that a
    set of one file (the pyannote sample) has a spread too."""
    step = round(BLOCK_S / FRAME_S)
    return [(r[i:i + step], h[i:i + step]) for r, h in pairs for i in range(0, r.size, step)]


def prf(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Precision, recall, F1 of hypothesis frames against reference frames, pooled over files."""
    tp = sum(int((r & h).sum()) for r, h in pairs)
    ref = sum(int(r.sum()) for r, _ in pairs)
    hyp = sum(int(h.sum()) for _, h in pairs)
    p, r = tp / max(1, hyp), tp / max(1, ref)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(1e-9, p + r), 4)}


def vad_rows(call, gap_s: float = GAP_S) -> dict:
    from tabs.vad import model as vad

    rows = {}
    analysed = {name: [(f, vad.analyse(call, x), x.size / qd.RATE, spans) for f, x, spans in items]
                for name, items in vad_files().items()}
    analysed["pooled"] = [item for items in analysed.values() for item in items]
    for name, items in analysed.items():
        def pairs(threshold):
            settings = {**APP_VAD, "threshold": threshold}
            return [(frames(spans, seconds, gap_s),
                     frames([(s["start"], s["end"]) for s in vad.segments_of(a, **settings)], seconds))
                    for _, a, seconds, spans in items]
        at_app = pairs(APP_VAD["threshold"])
        rows[name] = {"files": len(items), "seconds": round(sum(s for _, _, s, _ in items), 1),
                      "speech_share": round(sum(int(r.sum()) for r, _ in at_app) / sum(r.size for r, _ in at_app), 3),
                      **prf(at_app),
                      "f1_bootstrap": bootstrap(blocks(at_app), lambda ps: prf(ps)["f1"]),
                      "sweep": {str(t): prf(pairs(t)) for t in SWEEP}}
    # Each set once, whatever its length (AMI's 7 minutes would otherwise outweigh the rest).
    sets = [name for name in rows if name != "pooled"]
    rows["mean_of_sets"] = {"f1_by_threshold": {str(t): round(float(np.mean([rows[n]["sweep"][str(t)]["f1"] for n in sets])), 4)
                                                for t in SWEEP}}
    return rows


# --------------------------------------------------------------------------- diarization

def _diarized(call, samples: np.ndarray, reference: list, speakers: int) -> dict:
    """diarize's segments of `samples` (told `speakers`) scored against the reference turns: DER
    and its parts, boundary errors (bench.quality), and the segments."""
    from tabs.voices import model as vo

    span = (0.0, samples.size / qd.RATE)
    segments = vo.diarize(call, samples, speakers, qd.RATE)["segments"]
    hypothesis = [(s["start"], s["end"], s["speaker"]) for s in segments]
    errors = q.boundary_errors(reference, hypothesis, span)
    return {**{k: round(float(v), 4) for k, v in q.der(reference, hypothesis, span).items()},
            "seconds": round(span[1], 1), "boundaries": len(errors), "boundary_median_s": q.median_s(errors),
            "boundaries_within_0_5s": round(sum(e <= 0.5 for e in errors) / max(1, len(errors)), 3),
            "segments": hypothesis}


def diarization_row(call) -> dict:
    return _diarized(call, ss.audio(ss.SAMPLE / "sample.wav"), ss.sample_turns(), 2)


# Conversations joined from recordings of one person each, so that every turn edge is known
# exactly (issue 19): whole stretches of speech (librosa's non-silent intervals, 30 dB under
# each file's loudest, joined to 2-5 s a turn)
# of different readers, one after another with 0.15-0.6 s of digital silence between. Easier than
# a meeting: no overlap, no backchannels, each voice on its own microphone and room.
JOINED = {"two readers": ("sonnet", "librivox"), "three readers": ("sonnet", "librivox", "mfa")}
JOINED_TURNS = 10


def _reader(name: str) -> np.ndarray:
    files = {"sonnet": [ss.SONNET / "audio.wav"], "mfa": [ss.MFA / "wav" / "acoustic_corpus.wav"],
             "librivox": sorted((ss.SPHINX / "librivox").glob("*.wav"))}[name]
    return np.concatenate([ss.audio(f) for f in files])


def _pieces(wav: np.ndarray) -> list[np.ndarray]:
    """Consecutive stretches of speech (non-silent intervals joined up to 2-5 s), trimmed."""
    import librosa

    pieces, start, end = [], None, None
    for a, b in librosa.effects.split(wav, top_db=30, frame_length=512, hop_length=128):
        start = a if start is None else start
        end = b
        if (end - start) / qd.RATE >= 2.0 or (b - a) / qd.RATE > 5.0:
            pieces.append(wav[start:end])
            start = None
    return [p for p in pieces if p.size / qd.RATE <= 5.0]


def joined_conversation(speakers: tuple[str, ...], seed: int = 19) -> tuple[np.ndarray, list]:
    """(16 kHz samples, reference turns (start, end, speaker)) of JOINED_TURNS turns, the speakers
    taking turns in an order drawn with `seed` (never the same one twice in a row)."""
    rng = np.random.default_rng(seed)
    queues = {name: _pieces(_reader(name)) for name in speakers}
    parts, turns, now, last = [], [], 0.0, None
    for _ in range(JOINED_TURNS):
        name = rng.choice([n for n in speakers if n != last and queues[n]])
        piece = queues[name].pop(0)
        gap = np.zeros(int(rng.uniform(0.15, 0.6) * qd.RATE), np.float32)
        parts += [gap, piece]
        now += gap.size / qd.RATE
        turns.append((round(now, 3), round(now + piece.size / qd.RATE, 3), str(name)))
        now += piece.size / qd.RATE
        last = name
    parts.append(np.zeros(int(0.5 * qd.RATE), np.float32))
    return np.concatenate(parts), turns


def joined_rows(call) -> dict:
    rows = {}
    for label, speakers in JOINED.items():
        samples, reference = joined_conversation(speakers)
        rows[label] = {k: v for k, v in _diarized(call, samples, reference, len(speakers)).items() if k != "segments"}
    return rows


def run(verbose: bool = True) -> dict:
    from tabs import stt, vad, voices

    for lost in (qd.ami_missing(), ss.missing()):
        if lost:
            raise SystemExit(lost)
    call = qd.bench_call(stt.specs() + vad.specs() + voices.specs())

    seconds, started = {}, time.perf_counter()
    result = {}
    for key, fn in (("stt", stt_rows), ("vad", vad_rows), ("diarization_sample", diarization_row),
                    ("diarization_joined", joined_rows)):
        result[key] = fn(call)
        seconds[key] = round(time.perf_counter() - started - sum(seconds.values()), 1)
    result["seconds"] = seconds
    result["published_wer"] = PUBLISHED_WER
    if verbose:
        for name, r in result["stt"]["sets"].items():
            b = r["bootstrap"]
            print(f"speech to text {name}: {r['utterances']} utterances, {r['words']} words: WER {r['wer']:.1%} "
                  f"(S {r['sub']}, D {r['del']}, I {r['ins']}; bootstrap sd {b['sd']:.1%}, "
                  f"5-95 % {b['p5']:.1%}-{b['p95']:.1%})")
        for name, r in result["vad"].items():
            if name == "mean_of_sets":
                print("voice activity, F1 by threshold, mean of the sets: " + ", ".join(
                    f"{t}: {v:.3f}" for t, v in r["f1_by_threshold"].items()))
                continue
            sweep = ", ".join(f"{t}: {v['f1']:.3f}" for t, v in r["sweep"].items())
            print(f"voice activity {name}: {r['files']} files, {r['seconds']} s ({r['speech_share']:.0%} speech): "
                  f"precision {r['precision']:.3f}, recall {r['recall']:.3f}, F1 {r['f1']:.3f} "
                  f"(sd {r['f1_bootstrap']['sd']:.3f} over {BLOCK_S:g} s blocks); F1 by threshold {sweep}")
        d = result["diarization_sample"]
        print(f"diarization pyannote-sample: DER {d['der']:.1%} (missed {d['missed']:.1%}, false alarm "
              f"{d['false_alarm']:.1%}, confusion {d['confusion']:.1%}; overlapped {d['overlapped']:.1%}); "
              f"median boundary error {d['boundary_median_s']} s over {d['boundaries']} edges")
        for name, d in result["diarization_joined"].items():
            print(f"diarization joined, {name} ({d['seconds']} s): DER {d['der']:.1%} (missed {d['missed']:.1%}, "
                  f"false alarm {d['false_alarm']:.1%}, confusion {d['confusion']:.1%}); median boundary error "
                  f"{d['boundary_median_s']} s over {d['boundaries']} edges, {d['boundaries_within_0_5s']:.0%} within 0.5 s")
    return result
