"""Quality on real speech (issue 19, docs/quality.md): the voice code of tabs/voices on the AMI
meeting excerpts that ./setup.sh installs (bench/quality_data.py).

- voices: every clip embedded once as compare_voices does (tabs.voices.model.prepare, then
  voice_print through the engine), every pair scored with compare_voices' own
  tabs.voices.model.similarity. Clips: turn parts of at least 2 s where no one else speaks, cut
  into equal clips of 2-4 s. Reports the equal error rate (EER), the threshold at the EER point,
  and the false-accept / false-reject rates at the app's SAME_SPEAKER. Also: the same with
  parts of 1.5 s and more (more speakers, shorter clips), and with the same-speaker pairs taken
  across files only (no two clips from one recording session's minute). Then the same on two
  other microphones and kinds of speech: KDE's klettres and ktuberling voices (one volunteer per
  language reading letters, syllables, words), each voice's clips joined into pieces of 3 s.
- diarization: tabs.voices.model.diarize on each 30 s file, told the true number of speakers;
  diarization error rate against the RTTM (NIST definition, no collar, overlapped speech
  scored: the diarizer gives one speaker at a time, so overlap counts as missed) and the median
  turn-boundary error (below). The same again with the diarizer's later steps switched off
  (DIARIZER_STEPS, settings of tabs.voices.diarize.turns), so that what each step gives is
  measured side by side in one run.

DER is computed here, in 10 ms frames: pyannote.metrics is the usual library but is not
installed, and it would bring pyannote.core and its dependencies for some 30 lines of counting.
"""
from __future__ import annotations

import itertools
import statistics
import time

import numpy as np

from bench import quality_data as qd

FRAME_S = 0.01  # DER frame


# ---------------------------------------------------------------------------------- voices

def clip_prints(call, clips: list[qd.Turn]) -> np.ndarray:
    """compare_voices' voice print of each clip (unit vectors, one row each)."""
    from tabs.voices import model as vo

    audio = {uri: qd.ami_audio(uri) for uri in {c.uri for c in clips}}
    wavs = [vo.prepare(audio[c.uri][round(c.start * qd.RATE):round(c.end * qd.RATE)], qd.RATE) for c in clips]
    return np.stack(call(vo.VOICE_ENCODER, lambda enc: [vo.voice_print(enc, w) for w in wavs]))


def pair_scores(prints: np.ndarray, clips: list[qd.Turn], across_files: bool = False):
    """(scores, same) over every pair of clips; across_files: same-speaker pairs only from two files."""
    from tabs.voices.model import similarity

    scores, same = [], []
    for i, j in itertools.combinations(range(len(clips)), 2):
        is_same = clips[i].speaker == clips[j].speaker
        if across_files and is_same and clips[i].uri == clips[j].uri:
            continue
        scores.append(similarity(prints[i], prints[j]))
        same.append(is_same)
    return np.array(scores), np.array(same, dtype=bool)


def rates(scores: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-reject rate, false-accept rate) of deciding 'same speaker' when score >= threshold."""
    return float(np.mean(scores[same] < threshold)), float(np.mean(scores[~same] >= threshold))


def equal_error(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): over every score as a threshold, the one where the false-reject and
    false-accept rates (as rates() counts them) are closest; the EER is their mean there."""
    thresholds = np.unique(scores)
    same_sorted, different_sorted = np.sort(scores[same]), np.sort(scores[~same])
    frr = np.searchsorted(same_sorted, thresholds, side="left") / same_sorted.size
    far = (different_sorted.size - np.searchsorted(different_sorted, thresholds, side="left")) / different_sorted.size
    best = np.lexsort((thresholds, (frr + far) / 2, np.abs(frr - far)))[0]
    return float((frr[best] + far[best]) / 2), float(thresholds[best])


def voice_rows(call, threshold: float) -> dict:
    rows, embedded = {}, {}
    for name, min_s, across in [("ami", 2.0, False), ("ami_across_files", 2.0, True), ("ami_1.5s", 1.5, False)]:
        if min_s not in embedded:   # the two 2 s rows pair the same clips differently
            clips = qd.ami_clips(min_s, 4.0)
            embedded[min_s] = clips, clip_prints(call, clips)
        clips, prints = embedded[min_s]
        rows[name] = _rates_row(clips, *pair_scores(prints, clips, across), threshold)
    return rows


# Debian voice sets: each voice's clips (words, letters) joined in file order into pieces of at
# least JOINED_S, at most this many pieces per voice (the first look's cut, docs/quality.md).
JOINED_S = 3.0
PIECES_PER_VOICE = {"klettres": 12, "ktuberling": 8}


def joined_pieces(name: str) -> list[tuple[qd.Turn, np.ndarray]]:
    """(a Turn naming the voice, 16 kHz samples) for each piece of the Debian voice set."""
    import soundfile as sf
    from tabs.voices import model as vo

    pieces = []
    for voice, files in qd.voice_files(name).items():
        taken, buffer = 0, []
        for path in files:
            samples, rate = sf.read(path, dtype="float32", always_2d=False)
            buffer.append(vo.mono16k(samples, rate))
            if sum(b.size for b in buffer) >= JOINED_S * qd.RATE:
                pieces.append((qd.Turn(f"{name}/{voice}", taken, taken + 1, voice), np.concatenate(buffer)))
                taken, buffer = taken + 1, []
                if taken == PIECES_PER_VOICE[name]:
                    break
    return pieces


def voice_set_rows(call, threshold: float) -> dict:
    """EER and the rates at the app's threshold on each Debian voice set, scored as AMI is."""
    from tabs.voices import model as vo

    rows = {}
    for name in qd.DEBIAN_VOICES:
        pieces = joined_pieces(name)
        clips = [clip for clip, _ in pieces]
        wavs = [vo.prepare(samples, qd.RATE) for _, samples in pieces]
        prints = np.stack(call(vo.VOICE_ENCODER, lambda enc: [vo.voice_print(enc, w) for w in wavs]))
        rows[name] = _rates_row(clips, *pair_scores(prints, clips), threshold)
    return rows


def _rates_row(clips, scores: np.ndarray, same: np.ndarray, threshold: float) -> dict:
    eer, at = equal_error(scores, same)
    frr, far = rates(scores, same, threshold)
    return {"clips": len(clips), "speakers": len({c.speaker for c in clips}),
            "same_pairs": int(same.sum()), "different_pairs": int((~same).sum()),
            "eer": round(eer, 4), "threshold_at_eer": round(at, 3),
            "app_threshold": threshold, "frr_at_app": round(frr, 4), "far_at_app": round(far, 4),
            "same_median": round(float(np.median(scores[same])), 3),
            "different_median": round(float(np.median(scores[~same])), 3)}


# ---------------------------------------------------------------------------------- diarization

def _frames(turns, speakers: list[str], span: tuple[float, float]) -> np.ndarray:
    """(frames, speakers) bool: who speaks in each FRAME_S frame of span."""
    n = round((span[1] - span[0]) / FRAME_S)
    grid = np.zeros((n, len(speakers)), dtype=bool)
    for start, end, speaker in turns:
        a, b = (max(0, min(n, round((t - span[0]) / FRAME_S))) for t in (start, end))
        grid[a:b, speakers.index(speaker)] = True
    return grid


def mapping(reference, hypothesis, span) -> tuple[dict, np.ndarray, np.ndarray]:
    """The one-to-one speaker mapping (hypothesis -> reference) with the most time in common
    (Hungarian), and both frame grids."""
    from scipy.optimize import linear_sum_assignment

    ref_names = sorted({t[2] for t in reference})
    hyp_names = sorted({t[2] for t in hypothesis})
    ref, hyp = _frames(reference, ref_names, span), _frames(hypothesis, hyp_names, span)
    common = ref.T.astype(np.int64) @ hyp.astype(np.int64)
    rows, cols = linear_sum_assignment(-common)
    return {hyp_names[c]: ref_names[r] for r, c in zip(rows, cols)}, ref, hyp


def der(reference, hypothesis, span) -> dict:
    """NIST diarization error rate, no collar: (missed + false alarm + confusion) / reference
    speech, each counted per frame and per speaker (two people at once are two seconds a second)."""
    names, ref, hyp = mapping(reference, hypothesis, span)
    ref_names = sorted({t[2] for t in reference})
    hyp_names = sorted({t[2] for t in hypothesis})
    n_ref, n_hyp = ref.sum(axis=1), hyp.sum(axis=1)
    correct = np.zeros(len(ref), dtype=np.int64)
    for h, r in names.items():
        correct += ref[:, ref_names.index(r)] & hyp[:, hyp_names.index(h)]
    missed = np.maximum(0, n_ref - n_hyp).sum()
    false_alarm = np.maximum(0, n_hyp - n_ref).sum()
    confusion = (np.minimum(n_ref, n_hyp) - correct).sum()
    total = max(1, int(n_ref.sum()))
    # The part of `missed` a diarizer giving one speaker at a time cannot avoid.
    overlapped = np.maximum(0, n_ref - 1).sum()
    return {"der": (missed + false_alarm + confusion) / total, "missed": missed / total,
            "overlapped": overlapped / total, "false_alarm": false_alarm / total,
            "confusion": confusion / total, "speech_s": total * FRAME_S}


def _edges(turns, speaker, gap_s: float):
    """(starts, ends) of a speaker's turns, turns less than gap_s apart joined into one."""
    spans = sorted((a, b) for a, b, s in turns if s == speaker)
    joined: list[list[float]] = []
    for a, b in spans:
        if joined and a - joined[-1][1] < gap_s:
            joined[-1][1] = max(joined[-1][1], b)
        else:
            joined.append([a, b])
    return [a for a, _ in joined], [b for _, b in joined]


def boundary_errors(reference, hypothesis, span, gap_s: float = 0.3) -> list[float]:
    """For each start and end of a reference speaker's turn (a speaker's pauses under gap_s, the
    diarizer's own, do not end a turn; the file's cut edges are left out): the distance in
    seconds to the nearest start (or end) of the hypothesis speaker mapped to them; inf when that
    speaker has none."""
    names, _, _ = mapping(reference, hypothesis, span)
    errors = []
    for h, r in names.items():
        for ref_edges, hyp_edges in zip(_edges(reference, r, gap_s), _edges(hypothesis, h, gap_s)):
            for t in ref_edges:
                if span[0] + FRAME_S < t < span[1] - FRAME_S:
                    errors.append(min((abs(t - u) for u in hyp_edges), default=float("inf")))
    unmapped = {t[2] for t in reference} - set(names.values())
    for r in unmapped:
        errors += [float("inf")] * sum(1 for e in _edges(reference, r, gap_s) for t in e
                                       if span[0] + FRAME_S < t < span[1] - FRAME_S)
    return errors


def median_s(errors: list[float]) -> float | None:
    """Median in seconds; None when there is none or it is infinite (JSON has no inf)."""
    median = float(np.median(errors)) if errors else float("inf")
    return round(median, 3) if np.isfinite(median) else None


# The diarizer as first measured, then step by step as it is now (tabs.voices.diarize.turns' settings).
_LONG = {"assign_on_short": False, "min_turn_s": 0.3}  # before issue 19 item 4: 1.6 s prints, 0.3 s turns
DIARIZER_STEPS = {"first measured": {"vad_max_gain_db": 0.0, **_LONG},
                  "VAD on the recording raised to -30 dBFS": {"vad_max_gain_db": 99.0, "group_on_unraised": False,
                                                              **_LONG},
                  "raised by at most 6 dB": {"vad_max_gain_db": 6.0, "group_on_unraised": False, **_LONG},
                  "+ voices grouped on the unraised VAD's windows": _LONG,
                  "+ speech assigned by the 0.8 s prints": {"min_turn_s": 0.3, "centre_on_short": False},
                  "+ turns down to 0.25 s kept": {"centre_on_short": False},
                  "+ the voices' centroids among the 0.8 s prints (the app)": {}}


def listen_all(call) -> dict:
    """uri -> tabs.voices.diarize.listen's (samples, window starts, prints): the encoder's work,
    done once for every diarizer setting measured on it."""
    from tabs.voices import diarize as dz

    return {uri: dz.listen(call, qd.ami_audio(uri), qd.RATE) for uri in qd.ami_uris()}


def diarization_steps(heard: dict) -> dict:
    """diarization_rows for each of DIARIZER_STEPS (the steps differ only after the encoder)."""
    from tabs.voices import diarize as dz

    return {name: diarization_rows(lambda uri, speakers: dz.turns(*heard[uri], speakers, **settings))
            for name, settings in DIARIZER_STEPS.items()}


# What each part of the diarizer allows, on the same prints and speech flags: the true speakers'
# voices in place of the grouping (what the assignment by 0.8 s prints can do), and the true
# speaker of each 30 ms of the speech the VAD hears (what the VAD's edges alone allow).
CEILINGS = ("the true speakers' voices", "the true speaker of each 30 ms of speech heard")


def _true_centroids(reference, starts: np.ndarray, prints: np.ndarray, names: list[str]) -> np.ndarray:
    """Per speaker of `names`, the mean 0.8 s print of the windows its turns fill by 80 % or more
    (else of its best-filled window), unit length: the space speech is assigned in."""
    from tabs.voices.diarize import WINDOW_S

    a = starts / 100.0   # mel frames of 10 ms
    b = a + WINDOW_S
    rows = []
    for name in names:
        filled = sum(np.clip(np.minimum(b, end) - np.maximum(a, start), 0, None)
                     for start, end, speaker in reference if speaker == name) / WINDOW_S
        chosen = filled >= 0.8 if (filled >= 0.8).any() else filled == filled.max()
        centroid = prints[chosen, 1].mean(axis=0)
        rows.append(centroid / np.linalg.norm(centroid))
    return np.stack(rows)


def _true_owner(reference, speech: np.ndarray, names: list[str]) -> np.ndarray:
    """The true speaker of each 30 ms speech flag (-1 where no speech is heard or no one speaks;
    where turns overlap, the shorter turn's: a backchannel over a long turn is found)."""
    from tabs.voices import diarize as dz

    times = (np.arange(speech.size) + 0.5) * dz._VAD_WINDOW / dz.RATE
    owner = np.full(speech.size, -1)
    for start, end, speaker in sorted(reference, key=lambda t: t[0] - t[1]):   # longest first
        owner[(times >= start) & (times < end)] = names.index(speaker)
    return np.where(speech, owner, -1)


def diarization_ceilings(heard: dict) -> dict:
    """diarization_rows with each of CEILINGS in place of the diarizer's own part."""
    from tabs.voices import diarize as dz

    turns = qd.ami_turns()

    def known(uri):
        reference = [(t.start, t.end, t.speaker) for t in turns[uri]]
        return reference, sorted({t[2] for t in reference})

    def true_voices(uri, speakers):
        (reference, names), (wav, starts, prints) = known(uri), heard[uri]
        return {"segments": dz.segments_from(starts, prints, speakers=speakers, **dz.both_flags(wav),
                                             centroids=_true_centroids(reference, starts, prints, names))}

    def true_speakers(uri, speakers):
        reference, names = known(uri)
        speech = dz.drop_clicks(dz.both_flags(heard[uri][0])["flags"])
        return {"segments": dz.segments_of_owner(_true_owner(reference, speech, names))}

    return dict(zip(CEILINGS, (diarization_rows(true_voices), diarization_rows(true_speakers))))


def diarization_rows(diarize) -> dict:
    """DER and boundary errors over the AMI files; diarize(uri, speakers) -> {"segments": [...]}."""
    turns, uem = qd.ami_turns(), qd.ami_uem()
    totals = {"missed": 0.0, "false_alarm": 0.0, "confusion": 0.0, "overlapped": 0.0, "speech_s": 0.0}
    files, edges, two, train, held_out = {}, [], [], [], []
    for uri in qd.ami_uris():
        reference = [(t.start, t.end, t.speaker) for t in turns[uri]]
        speakers = len({t[2] for t in reference})
        segments = diarize(uri, speakers)["segments"]
        hypothesis = [(s["start"], s["end"], s["speaker"]) for s in segments]
        scored = der(reference, hypothesis, uem[uri])
        errors = boundary_errors(reference, hypothesis, uem[uri])
        edges += errors
        two += errors if speakers == 2 else []
        (train if uri.startswith("trn") else held_out).extend(errors)
        files[uri] = {"speakers": speakers, "der": round(scored["der"], 4), "boundary_median_s": median_s(errors)}
        for key in totals:
            totals[key] += scored[key] * (scored["speech_s"] if key != "speech_s" else 1)
    speech = totals.pop("speech_s")
    finite = [e for e in edges if np.isfinite(e)]
    return {"files": len(files), "speech_s": round(speech, 1),
            "der": round((totals["missed"] + totals["false_alarm"] + totals["confusion"]) / speech, 4),
            **{k: round(v / speech, 4) for k, v in totals.items()},
            "boundaries": len(edges), "boundary_median_s": median_s(edges),
            "boundary_median_2_speakers_s": median_s(two),
            # trn00-trn09, where the diarizer's settings were chosen; dev and tst held out
            "boundary_median_train_s": median_s(train), "boundary_median_held_out_s": median_s(held_out),
            "boundaries_within_0_5s": round(sum(e <= 0.5 for e in finite) / len(edges), 3),
            "per_file": files}


def run(verbose: bool = True) -> dict:
    from tabs.voices import model as vo
    from tabs.voices import specs

    missing = qd.ami_missing() or next(filter(None, map(qd.voices_missing, qd.DEBIAN_VOICES)), None)
    if missing:
        raise SystemExit(missing)
    call = qd.bench_call(specs())

    started = time.perf_counter()
    voices = {**voice_rows(call, vo.SAME_SPEAKER), **voice_set_rows(call, vo.SAME_SPEAKER)}
    voices_s = time.perf_counter() - started
    heard = listen_all(call)
    steps = diarization_steps(heard)
    ceilings = diarization_ceilings(heard)
    diarization = steps[list(DIARIZER_STEPS)[-1]]
    diarization_s = time.perf_counter() - started - voices_s
    result = {"data": "AMI excerpts (pyannote.audio 4.0.7 sdist tests/data, 14 x 30 s); voices also on "
                      "Debian's klettres-data and ktuberling-data", "voices": voices,
              "diarization": diarization,
              "diarization_steps": {name: {k: v for k, v in row.items() if k != "per_file"}
                                    for name, row in steps.items()},
              "diarization_ceilings": {name: {k: v for k, v in row.items() if k != "per_file"}
                                       for name, row in ceilings.items()},
              "seconds": {"voices": round(voices_s, 1), "diarization": round(diarization_s, 1)}}
    if verbose:
        for name, row in voices.items():
            print(f"voices {name}: {row['clips']} clips / {row['speakers']} speakers, {row['same_pairs']} same / "
                  f"{row['different_pairs']} different pairs: EER {row['eer']:.1%} at {row['threshold_at_eer']}; "
                  f"at {row['app_threshold']}: FRR {row['frr_at_app']:.1%}, FAR {row['far_at_app']:.1%}")
        for name, d in {**steps, **{f"ceiling, {k}": v for k, v in ceilings.items()}}.items():
            print(f"diarization, {name}: {d['files']} files, DER {d['der']:.1%} (missed {d['missed']:.1%}, "
                  f"false alarm {d['false_alarm']:.1%}, confusion {d['confusion']:.1%}; overlapped speech "
                  f"{d['overlapped']:.1%}); median boundary error {d['boundary_median_s']} s over "
                  f"{d['boundaries']} edges ({d['boundary_median_2_speakers_s']} s in the 2-speaker files, train "
                  f"{d['boundary_median_train_s']} s, held-out {d['boundary_median_held_out_s']} s), "
                  f"{d['boundaries_within_0_5s']:.0%} within 0.5 s; median DER per file "
                  f"{statistics.median(f['der'] for f in d['per_file'].values()):.1%}")
    return result
