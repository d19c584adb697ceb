"""espeak-ng through ctypes: text -> IPA phonemes (for the Piper voice) and text -> robot speech.

The library and its data come from the espeakng-loader wheel (libespeak-ng.so + espeak-ng-data),
so no system espeak-ng and no GPL Python binding are needed. libespeak-ng keeps global state
(current voice, rate, the synth callback) and is not thread-safe: every call holds `_LOCK`,
and the library is initialised once per process.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from engine.package_files import package_folder, reason_if_missing

_MISSING = ("espeakng-loader is not installed: run ./setup.sh "
            "(it installs espeakng-loader==0.2.4 for libespeak-ng.so and espeak-ng-data)")

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of exit() on bad data
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_POS_CHARACTER = 1
_ESPEAK_RATE = 1
_EE_OK = 0
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# espeak_TextToPhonemes does not return the punctuation that ended a clause (and this build
# lacks espeak_TextToPhonemesWithTerminator), so we read it from the text the clause consumed;
# espeak reads one character past the clause end before it stops, which is not part of it.
# Piper voices were trained on piper-phonemize output: '.', '?', '!' end a sentence,
# ',', ':', ';' are followed by a space.
_SENTENCE_END = {".": ".", "?": "?", "!": "!", "…": "."}
_CLAUSE_END = {",": ",", ":": ":", ";": ";"}
# espeak ends a clause at "Mr." but reads it as a title, not a sentence end (its terminator flags
# say so, which we cannot see): without this list "Mr. Smith" would become two sentences.
_TITLES = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "mt", "vs", "etc", "e.g", "i.e"}

_LOCK = threading.Lock()
_state: dict = {}  # lib, sample_rate, voice, callback, chunks: set once under _LOCK


def library_folder() -> Path:
    """The espeakng_loader package folder: libespeak-ng.so and espeak-ng-data/ side by side."""
    folder = package_folder("espeakng_loader", "", ["libespeak-ng.so"], _MISSING)
    if not (folder / "espeak-ng-data" / "phontab").is_file():
        raise FileNotFoundError(f"{_MISSING} (missing in {folder}: espeak-ng-data/phontab)")
    return folder


def unavailable_reason() -> str | None:
    """Why espeak-ng cannot run here (None when it can)."""
    return reason_if_missing(library_folder)


def _on_audio(wav, count, _events) -> int:
    if wav and count > 0:
        _state["chunks"].append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
    return 0  # 0 = go on synthesising


def _lib():
    """The initialised library (call with _LOCK held)."""
    if "lib" in _state:
        return _state["lib"]
    folder = library_folder()
    try:
        lib = ctypes.CDLL(str(folder / "libespeak-ng.so"))
    except OSError as exc:
        raise FileNotFoundError(f"{_MISSING} (libespeak-ng.so would not load: {exc})") from exc
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    # The path argument is the folder that *contains* espeak-ng-data.
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(folder).encode(), _INITIALIZE_DONT_EXIT)
    if rate <= 0:
        raise RuntimeError(f"espeak-ng failed to initialise with data in {folder} (code {rate})")
    callback = _CALLBACK(_on_audio)  # kept in _state: ctypes must not free it
    lib.espeak_SetSynthCallback(callback)
    _state.update(lib=lib, sample_rate=rate, voice=None, callback=callback, chunks=[])
    return lib


def _set_voice(lib, voice: str) -> None:
    if _state["voice"] != voice:
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        _state["voice"] = voice


def _clause_terminator(consumed: bytes, last: bool) -> str:
    """The punctuation piper-phonemize would emit for a clause that consumed these bytes."""
    tail = consumed.decode("utf-8", errors="ignore")
    if not last:
        tail = tail[:-1]  # the look-ahead character belongs to the next clause
    tail = tail.rstrip()
    # Closing quotes/brackets after the mark ('He said "stop."') still end the sentence.
    tail = tail.rstrip("\"'”’)]}»")
    if not tail:
        return ""
    mark = tail[-1]
    words = tail[:-1].split()
    if mark == "." and not last and words and words[-1].lower() in _TITLES:
        return ""
    if mark in _SENTENCE_END:
        return _SENTENCE_END[mark]
    if mark in _CLAUSE_END:
        return _CLAUSE_END[mark] + " "
    return ""


def phonemize_sentences(text: str, voice: str = "en-us") -> list[str]:
    """IPA for each sentence of `text`, with its punctuation, as piper-phonemize produces it."""
    data = text.encode("utf-8")
    if not data.strip():
        return []
    buffer = ctypes.create_string_buffer(data)  # NUL-terminated; espeak reads up to the NUL
    start = ctypes.addressof(buffer)
    sentences, current = [], ""
    with _LOCK:
        lib = _lib()
        _set_voice(lib, voice)
        pointer = ctypes.c_void_p(start)
        while pointer.value:
            before = pointer.value
            phonemes = (lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA)
                        or b"").decode("utf-8", errors="replace")
            end = pointer.value or start + len(data)
            terminator = _clause_terminator(data[before - start:end - start], last=not pointer.value)
            if current and not current.endswith(" "):
                current += " "  # clauses that ended without punctuation still part words
            current += phonemes.strip() + terminator
            if terminator in _SENTENCE_END.values():
                sentences.append(current.strip())
                current = ""
    if current.strip():
        sentences.append(current.strip())
    return [s for s in sentences if s]


def phonemize(text: str, voice: str = "en-us") -> str:
    """IPA phonemes of `text` (UTF-8 IPA, words split by spaces, sentence punctuation kept)."""
    return " ".join(phonemize_sentences(text, voice))


def sample_rate() -> int:
    """espeak-ng's output rate in Hz (22050)."""
    with _LOCK:
        _lib()
        return _state["sample_rate"]


def synthesize(text: str, voice: str = "en-us", words_per_minute: int = 160) -> tuple[np.ndarray, int]:
    """espeak-ng speech for `text`: (float32 mono samples in [-1, 1], sample rate)."""
    if not 80 <= words_per_minute <= 450:
        raise ValueError(f"words_per_minute must be between 80 and 450, not {words_per_minute}")
    data = text.encode("utf-8")
    with _LOCK:
        lib = _lib()
        _set_voice(lib, voice)
        lib.espeak_SetParameter(_ESPEAK_RATE, int(words_per_minute), 0)
        _state["chunks"] = []
        try:
            # AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns when every sample went to _on_audio.
            status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != _EE_OK:
                raise RuntimeError(f"espeak-ng could not synthesise the text (code {status})")
            chunks, rate = _state["chunks"], _state["sample_rate"]
        finally:
            _state["chunks"] = []
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return (pcm.astype(np.float32) / 32768.0), rate
