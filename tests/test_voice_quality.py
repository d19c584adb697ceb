"""compare_voices on real meeting speech (the AMI excerpts ./setup.sh installs, docs/quality.md),
and the diarization error rate that bench/quality.py computes itself.

Measured (bench/quality.py, resemblyzer 0.1.4 on CPU): 46 clips of 2-4 s from 11 speakers,
143 same- / 892 different-speaker pairs; EER 7.0 % at 0.702; at the app's 0.70 6.3 % of
same-speaker pairs are called different and 7.5 % of different-speaker pairs the same.
Margins: a bootstrap over the clips (200 draws) gave the EER a spread (sd) of 3.0 points and the
EER threshold 0.013 (5-95 %: 0.675-0.721). The scores themselves are deterministic, so the
assertions allow one sd of the set's sampling spread for the EER and two for the threshold:
they fail when the voice code gets worse by more than this small set can tell apart.
"""
import numpy as np
import pytest

import tabs.voices as capability
from bench import quality as q
from bench import quality_data as qd
from capability_engine import capability_engine
from engine.media.audio import write_wav
from tabs.voices import diarize as dz
from tabs.voices import model as vo
from tabs.voices import tab

EER_MEASURED, EER_SD = 0.070, 0.030
THRESHOLD_SD = 0.013


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    if qd.ami_missing():
        pytest.fail(qd.ami_missing())  # setup.sh installs the set: its absence is a broken install
    with capability_engine(tmp_path_factory.mktemp("voice-quality"), capability.specs(), []) as engine:
        yield engine


@pytest.fixture(scope="module")
def ami(call):
    """The clips and their voice prints, embedded once for the module (about 4 s)."""
    clips = qd.ami_clips()
    return clips, q.clip_prints(call, clips)


def test_the_ami_set_is_installed_as_setup_sh_leaves_it():
    assert qd.ami_missing() is None
    turns, uem = qd.ami_turns(), qd.ami_uem()
    assert len(uem) == 14 and set(turns) == set(uem) and "trn00" in turns  # trñ00.wav stored as trn00
    assert len({t.speaker for ts in turns.values() for t in ts}) == 27
    assert qd.ami_audio("trn00").shape == (480001,)  # 30 s at 16 kHz, float


def test_the_equal_error_rate_on_real_meeting_speech(ami):
    clips, prints = ami
    scores, same = q.pair_scores(prints, clips)
    assert (len(clips), len({c.speaker for c in clips}), int(same.sum()), int((~same).sum())) == (46, 11, 143, 892)
    eer, at = q.equal_error(scores, same)
    assert eer <= EER_MEASURED + EER_SD, f"EER {eer:.1%} on AMI (measured {EER_MEASURED:.1%})"
    assert abs(at - vo.SAME_SPEAKER) <= 2 * THRESHOLD_SD, f"the EER point moved to {at:.3f}"
    # Medians measured 0.795 (same speaker) and 0.607 (different): near the line, apart on the whole.
    assert np.median(scores[same]) - np.median(scores[~same]) > 0.15


def test_the_app_threshold_separates_real_pairs_at_about_the_eer(ami):
    clips, prints = ami
    scores, same = q.pair_scores(prints, clips)
    frr, far = q.rates(scores, same, vo.SAME_SPEAKER)
    limit = EER_MEASURED + EER_SD
    assert frr <= limit and far <= limit, f"at {vo.SAME_SPEAKER}: FRR {frr:.1%}, FAR {far:.1%}"
    # What the tab tells the user is what the set shows (to the percent it states).
    assert (frr, far) == pytest.approx((vo.SAME_SPEAKER_FRR, vo.SAME_SPEAKER_FAR), abs=0.01)
    # The old threshold, calibrated on synthetic voices, rejected half of the real same-speaker pairs.
    assert q.rates(scores, same, 0.80)[0] > 0.4


def test_the_tab_calls_a_real_pair_the_same_voice_that_080_rejected(engine, ami, tmp_path):
    """The symptom of issue 19, through the tab's handler and files: two clips of one AMI speaker
    from two different meetings' minutes, scoring between the new and the old threshold."""
    clips, prints = ami
    pairs = [(i, j) for i in range(len(clips)) for j in range(i + 1, len(clips))
             if clips[i].speaker == clips[j].speaker and clips[i].uri != clips[j].uri
             and vo.SAME_SPEAKER + 0.02 < vo.similarity(prints[i], prints[j]) < 0.78]
    assert pairs
    i, j = pairs[0]
    paths = []
    for k in (i, j):
        c = clips[k]
        path = tmp_path / f"clip{k}.wav"
        write_wav(path, qd.ami_audio(c.uri)[round(c.start * qd.RATE):round(c.end * qd.RATE)], qd.RATE)
        paths.append(str(path))
    result = tab.compare_voices(engine, *paths)
    assert result["same_speaker"] is True
    assert result["similarity"] == pytest.approx(vo.similarity(prints[i], prints[j]), abs=2e-3)


def test_diarization_of_the_two_speaker_meetings(call):
    """dev00, dev01, trn03 (2 speakers each), with the VAD on the recording raised by up to 6 dB,
    voices grouped on the unraised VAD's windows with their centroids among the 0.8 s prints,
    speech assigned by the 0.8 s prints and turns down to 0.25 s kept: measured DER 35.5, 34.2,
    28.1 % (32.3 % pooled: missed 25.7, false alarm 1.9, confusion 4.6 points) and a median
    turn-boundary error of 0.16 s over 35 edges (centroids of the 1.6 s prints: 30.9 %, confusion
    3.3, and 0.20 s). First measured (VAD at the recording's own volume, 1.6 s prints): 48.8,
    42.5, 29.2 % (39.6 % pooled: missed 31.6, confusion 6.8) and 0.36 s. Margin: the per-file
    spread of the DER over the square root of the files (4.8 / 1.7 = 2.8 points), which still
    fails at the first measured figures. The boundary error is held to issue 19's goal, 0.5 s.
    (All 14 files: bench/quality.py.)"""
    turns, uem = qd.ami_turns(), qd.ami_uem()
    totals, edges = np.zeros(4), []
    for uri in ("dev00", "dev01", "trn03"):
        reference = [(t.start, t.end, t.speaker) for t in turns[uri]]
        segments = vo.diarize(call, qd.ami_audio(uri), 2, qd.RATE)["segments"]
        hypothesis = [(s["start"], s["end"], s["speaker"]) for s in segments]
        scored = q.der(reference, hypothesis, uem[uri])
        speech = scored["speech_s"]
        totals += [scored["missed"] * speech, scored["false_alarm"] * speech, scored["confusion"] * speech, speech]
        edges += q.boundary_errors(reference, hypothesis, uem[uri])
    missed, false_alarm, confusion = totals[:3] / totals[3]
    margin = 0.028
    assert missed + false_alarm + confusion <= 0.323 + margin
    assert missed <= 0.257 + margin and false_alarm <= 0.019 + margin and confusion <= 0.046 + margin
    assert len(edges) == 35 and np.median(edges) < 0.5


def test_short_turns_on_the_held_out_meetings(call):
    """dev00, dev01, tst00, tst01 (held out when the diarizer's settings were tried on trn00-trn09):
    speech assigned by the 0.8 s prints, turns down to 0.25 s kept, the voices' centroids among
    the 0.8 s prints: median turn-boundary error 0.26 s over 80 edges (bootstrap sd over edges
    0.12 s); with centroids of the 1.6 s prints 0.35 s; the 1.6 s prints alone with 0.3 s turns
    0.64 s. Held to issue 19's 0.5 s, and to better than the older settings on the same windows."""
    turns, uem = qd.ami_turns(), qd.ami_uem()
    older = ({"centre_on_short": False}, {"assign_on_short": False, "min_turn_s": 0.3})
    edges, before = [], [[] for _ in older]
    for uri in ("dev00", "dev01", "tst00", "tst01"):
        reference = [(t.start, t.end, t.speaker) for t in turns[uri]]
        heard = dz.listen(call, qd.ami_audio(uri), qd.RATE)
        for settings, into in zip(({}, *older), (edges, *before)):
            found = dz.turns(*heard, len({t[2] for t in reference}), **settings)
            hypothesis = [(s["start"], s["end"], s["speaker"]) for s in found["segments"]]
            into += q.boundary_errors(reference, hypothesis, uem[uri])
    assert len(edges) == 80 and [len(b) for b in before] == [80, 80]
    assert np.median(edges) < 0.5
    assert np.median(edges) < np.median(before[0]) < np.median(before[1])


def test_a_near_silent_meeting_is_not_raised_into_speech():
    """AMI trn02 (-51 dBFS, 0.6 s of speech in 30 s): raised the 21 dB to -30 dBFS, webrtcvad
    calls 56 % of its 30 ms windows speech (4 % unraised, 16.5 % raised by 6 dB); that step alone
    took the pooled false alarm from 5.5 to 17.0 % (bench/quality.py). The diarizer raises it 6 dB."""
    wav = qd.ami_audio("trn02")
    assert dz.vad_gain_db(wav) == pytest.approx(6.0)
    flags = dz.both_flags(wav)
    assert flags["unraised"].mean() < flags["flags"].mean() < 0.25 < dz.speech_flags(wav, 21.0).mean()


def test_the_diarization_error_rate_counts_as_nist_defines_it():
    span = (0.0, 10.0)
    reference = [(0.0, 4.0, "A"), (4.0, 8.0, "B"), (7.0, 8.0, "A")]  # 9 s of speech, 1 s overlapped
    renamed = [(a, b, {"A": "speaker 2", "B": "speaker 1"}[s]) for a, b, s in reference]
    assert q.der(reference, renamed, span)["der"] == pytest.approx(0.0)
    one_at_a_time = [(0.0, 4.0, "x"), (4.0, 8.0, "y")]
    scored = q.der(reference, one_at_a_time, span)
    assert (scored["missed"], scored["false_alarm"], scored["confusion"]) == pytest.approx((1 / 9, 0, 0))
    assert scored["overlapped"] == pytest.approx(1 / 9)
    # 1 s given to the wrong voice, 1 s of silence called speech:
    late = [(0.0, 5.0, "x"), (5.0, 8.0, "y"), (9.0, 10.0, "y")]
    scored = q.der(late, late, span)
    assert scored["der"] == pytest.approx(0.0)
    scored = q.der(one_at_a_time, late, span)
    assert (scored["confusion"], scored["false_alarm"], scored["der"]) == pytest.approx((1 / 8, 1 / 8, 2 / 8))
    # x ends at 4 (said 5), y starts at 4 (said 5) and ends at 8 (said 8); the cut edge at 0 is not counted.
    assert q.boundary_errors(one_at_a_time, late, span) == pytest.approx([1.0, 1.0, 0.0])


# Other microphones and speech: KDE's klettres and ktuberling voices (one volunteer per language
# reading letters, syllables or words; pieces of 3 s). Measured (bench quality): klettres 220
# pieces / 19 voices, EER 9.2 % at 0.616, at 0.70 FRR 25.4 % and FAR 1.0 %; ktuberling 124 / 22,
# EER 6.9 % at 0.643, FRR 9.6 %, FAR 1.5 %. Bootstrap over the pieces (200 draws), sd: EER 2.0 /
# 2.9 points, FRR 4.1 / 3.9, FAR 0.23 / 0.38. The EER may rise by one sd; the false accepts,
# which the tab promises stay at 1-2 % on such recordings, by two.
MEASURED = {"klettres": {"pieces": 220, "voices": 19, "eer": (0.092, 0.020), "frr": (0.254, 0.041), "far": (0.010, 0.0023)},
            "ktuberling": {"pieces": 124, "voices": 22, "eer": (0.069, 0.029), "frr": (0.096, 0.039), "far": (0.015, 0.0038)}}


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_the_threshold_on_words_read_by_other_voices(call, name):
    if qd.voices_missing(name):
        pytest.fail(qd.voices_missing(name))
    pieces = q.joined_pieces(name)
    clips = [clip for clip, _ in pieces]
    wavs = [vo.prepare(samples, qd.RATE) for _, samples in pieces]
    prints = np.stack(call(vo.VOICE_ENCODER, lambda enc: [vo.voice_print(enc, w) for w in wavs]))
    scores, same = q.pair_scores(prints, clips)
    want = MEASURED[name]
    assert (len(clips), len({c.speaker for c in clips})) == (want["pieces"], want["voices"])
    eer, at = q.equal_error(scores, same)
    frr, far = q.rates(scores, same, vo.SAME_SPEAKER)
    assert eer <= sum(want["eer"]), f"{name}: EER {eer:.1%}"
    assert frr <= sum(want["frr"]), f"{name}: FRR {frr:.1%} at {vo.SAME_SPEAKER}"
    assert far <= want["far"][0] + 2 * want["far"][1], f"{name}: FAR {far:.1%} at {vo.SAME_SPEAKER}"
    # Read words sit lower than meeting speech: their EER point is under the app's threshold,
    # which was set where AMI's meeting room lifts different voices (0.70).
    assert at < vo.SAME_SPEAKER
