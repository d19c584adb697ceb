"""espeak-ng through ctypes (espeakng-loader wheel): IPA as piper-phonemize gives it, and speech."""
import threading

import numpy as np
import pytest

from tabs.tts import espeak


def test_the_library_and_its_data_are_here():
    assert espeak.unavailable_reason() is None
    assert (espeak.library_folder() / "espeak-ng-data" / "en_dict").is_file()
    assert espeak.sample_rate() == 22050


def test_phonemes_are_espeak_ipa_without_joiners():
    assert espeak.phonemize("hello world") == "həlˈoʊ wˈɜːld"
    ipa = espeak.phonemize("church judge")
    assert ipa == "tʃˈɜːtʃ dʒˈʌdʒ"
    assert "\u200d" not in ipa and "_" not in ipa  # no tie or separator characters


def test_punctuation_is_kept_and_sentences_split_as_piper_phonemize_does():
    sentences = espeak.phonemize_sentences("Hello, world! How are you? I am fine; thanks: really.")
    assert sentences == ["həlˈoʊ, wˈɜːld!", "hˈaʊ ɑːɹ juː?", "aɪɐm fˈaɪn; θˈæŋks: ɹˈiəli."]
    # A title's dot is not a sentence end; quotes after the mark do not hide it.
    assert espeak.phonemize_sentences("Mr. Smith went to Washington.") == [
        "mˈɪstɚ smˈɪθ wɛnt tə wˈɑːʃɪŋtən."]
    assert espeak.phonemize_sentences('He said "stop." Then left.') == ["hiː sˈɛd stˈɑːp.", "ðˈɛn lˈɛft."]
    assert espeak.phonemize("  \n ") == "" and espeak.phonemize_sentences("") == []


def test_unknown_voice_is_a_clear_error():
    with pytest.raises(ValueError, match="no voice"):
        espeak.phonemize("hello", voice="xx-nonexistent")
    assert espeak.phonemize("hello") == "həlˈoʊ"  # the library still works after the error


def test_a_short_sentence_gives_a_few_seconds_of_clean_speech():
    samples, rate = espeak.synthesize("The quick brown fox jumps over the lazy dog.")
    assert rate == 22050 and samples.dtype == np.float32 and samples.ndim == 1
    assert 1.0 < len(samples) / rate < 4.0
    assert np.abs(samples).max() <= 1.0
    assert np.sqrt(np.mean(samples ** 2)) > 0.03  # speech, not silence
    # Voiced speech: most of the energy sits between 80 Hz and 4 kHz.
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    assert spectrum[(freqs > 80) & (freqs < 4000)].sum() / spectrum.sum() > 0.8


def test_speaking_rate_changes_duration():
    slow, rate = espeak.synthesize("One two three four five six seven eight.", words_per_minute=120)
    fast, _ = espeak.synthesize("One two three four five six seven eight.", words_per_minute=240)
    assert 1.5 < len(slow) / len(fast) < 2.5
    with pytest.raises(ValueError):
        espeak.synthesize("hi", words_per_minute=10)


def test_calls_from_several_threads_do_not_mix():
    expected, _ = espeak.synthesize("Thread safety matters.")
    phonemes = espeak.phonemize("Thread safety matters.")
    results = []

    def work():
        for _ in range(3):
            results.append((espeak.synthesize("Thread safety matters.")[0], espeak.phonemize("Thread safety matters.")))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 9
    # espeak carries wave state from one utterance to the next, so lengths vary by a few ms;
    # a call mixed with another's samples would be twice as long or cut short.
    for samples, ipa in results:
        assert ipa == phonemes and abs(len(samples) - len(expected)) < 0.05 * len(expected)
