"""The audio endpoints through the real app and gradio_client: speech made by the app is read
back by the app, and every audio section answers."""
import re

import numpy as np
import pytest
import soundfile
from gradio_client import handle_file

from app_process import app_client

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with app_client(tmp_path_factory.mktemp("data")) as client:
        yield client


@pytest.fixture(scope="module")
def speech(client, tmp_path_factory):
    return client.predict(SENTENCE, 1.0, api_name="/speak")


def words(text):
    return re.findall(r"[a-z]+", text.lower())


def test_speak_then_transcribe_gives_the_sentence_back(client, speech):
    samples, rate = soundfile.read(speech)
    assert rate == 22050 and 1.5 < len(samples) / rate < 6
    text, *_ = client.predict(handle_file(speech), "segment", False, api_name="/transcribe")
    assert words(text) == words(SENTENCE)


def test_voice_activity_pitch_denoise_and_voices_answer(client, speech, tmp_path):
    samples, rate = soundfile.read(speech)
    padded = np.concatenate([np.zeros(rate), samples, np.zeros(rate)])
    soundfile.write(tmp_path / "padded.wav", padded, rate)
    _, found = client.predict(handle_file(str(tmp_path / "padded.wav")), 0.5, 0.3, api_name="/detect_speech")
    (segment,) = found["segments"]
    assert abs(segment["start"] - 1.0) < 0.3 and abs(segment["end"] - (1.0 + len(samples) / rate)) < 0.3

    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(2 * 16000) / 16000)
    soundfile.write(tmp_path / "tone.wav", tone, 16000)
    _, pitch = client.predict(handle_file(str(tmp_path / "tone.wav")), 0.4, api_name="/pitch")
    assert abs(pitch["median_hz"] - 220) < 2

    cleaned, _ = client.predict(handle_file(speech), "rnnoise", api_name="/denoise")
    assert soundfile.info(cleaned).duration == pytest.approx(len(samples) / rate, abs=0.05)

    same = client.predict(handle_file(speech), handle_file(speech), api_name="/compare_voices")
    assert same["same_speaker"] is True and same["similarity"] > 0.95


def test_bad_audio_gets_a_plain_message(client, tmp_path):
    (tmp_path / "fake.wav").write_text("this is not audio")
    with pytest.raises(Exception) as caught:
        client.predict(handle_file(str(tmp_path / "fake.wav")), "segment", False, api_name="/transcribe")
    assert "not audio or video" in str(caught.value) and "Traceback" not in str(caught.value)
