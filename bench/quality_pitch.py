"""Pitch quality on real speech (issue 19, docs/quality.md): agreement of tabs/pitch (swift-f0)
with librosa's pYIN, a well-known probabilistic tracker, since no package ships real speech with
a measured F0 (laryngograph) reference. Neither tracker is ground truth: these are agreement
figures; where the two differ either may be wrong.

Speech: the AMI solo clips of bench/quality_data (ami_clips(): 46 clips of 2-4 s, 11 speakers,
meeting microphones) and gradio's interview clips (cate_blanch.mp3, cate_blanch_2.mp3: one
woman; heath_ledger.mp3: a man), decoded at 16 kHz by engine.media.audio.read_audio.

swift-f0 runs as the tab runs it (tabs.pitch.model.pitch through the engine, voicing 0.5): its
voiced frames [t, hz] come back, every other frame of the clip is unvoiced. pYIN runs on the
same samples with the same 16 ms grid (hop 256 at 16 kHz, frames centred on t = i * 16 ms as
swift-f0's are), fmin 50 Hz, fmax 600 Hz (speech; swift-f0 reads 47-2094 Hz), its own voicing
decision. Per frame, over the frames both trackers have:

- gross pitch error (GPE): of the frames both call voiced, the share where swift-f0 is more
  than 20 % away from pYIN (|f_swift / f_pyin - 1| > 0.2);
- median absolute difference in cents over the frames both call voiced;
- octave errors: of those frames, the share where swift-f0 is an octave above or below pYIN
  (| |cents| - 1200 | < 100); they are part of the GPE; octave_up: those where swift-f0 is above;
- voicing decision error (VDE): the share of all frames voiced by one tracker only; also split
  into frames pYIN voices that swift-f0 does not, and the reverse.

Reported per speaker and pooled (frames of all clips added), with a bootstrap over clips.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import quality_data as qd

RATE = 16000
HOP = 256
PYIN_FMIN, PYIN_FMAX = 50.0, 600.0  # speech; a wider band doubles pYIN's time (its Viterbi grows with it)
PYIN_FRAME = 1024  # 64 ms, 2048 at 22.05 kHz (librosa's default) scaled to 16 kHz; holds 3 periods of 50 Hz
GROSS = 0.2
GRADIO = {"cate_blanch.mp3": "Cate Blanchett", "cate_blanch_2.mp3": "Cate Blanchett",
          "heath_ledger.mp3": "Heath Ledger"}


@dataclass(frozen=True)
class Clip:
    name: str
    speaker: str
    samples: np.ndarray


def gradio_folder() -> Path:
    import gradio

    return Path(gradio.__file__).parent / "media_assets" / "audio"


def clips(per_speaker: int | None = None) -> list[Clip]:
    """The AMI clips (only the first per_speaker of each AMI speaker, when given), then gradio's."""
    from engine.media.audio import read_audio

    found, taken = [], {}
    audio = {}
    for c in qd.ami_clips():
        taken[c.speaker] = taken.get(c.speaker, 0) + 1
        if per_speaker is None or taken[c.speaker] <= per_speaker:
            if c.uri not in audio:
                audio[c.uri] = qd.ami_audio(c.uri)
            found.append(Clip(f"{c.uri}@{c.start:.2f}", c.speaker,
                              audio[c.uri][round(c.start * RATE):round(c.end * RATE)]))
    return found + [Clip(name, speaker, read_audio(gradio_folder() / name, RATE)) for name, speaker in GRADIO.items()]


def swift_frames(call, samples: np.ndarray) -> np.ndarray:
    """F0 per 16 ms frame from the tab's pitch(): Hz where voiced, 0 where not."""
    from tabs.pitch import model as pz

    result = pz.pitch(call, samples, RATE)
    f0 = np.zeros(len(samples) // HOP)
    for t, hz in result["f0"]:
        f0[round(t * RATE / HOP)] = hz
    return f0


def pyin_frames(samples: np.ndarray) -> np.ndarray:
    """pYIN's F0 per frame on the same grid: Hz where it decides voiced, 0 where not."""
    import librosa

    f0, voiced, _ = librosa.pyin(samples.astype(np.float32), fmin=PYIN_FMIN, fmax=PYIN_FMAX, sr=RATE,
                                 frame_length=PYIN_FRAME, hop_length=HOP, center=True)
    return np.where(voiced & np.isfinite(f0), f0, 0.0)


def counts(swift: np.ndarray, pyin: np.ndarray) -> dict:
    """Frame counts of one clip (or many, concatenated) for the rates below."""
    n = min(len(swift), len(pyin))
    s, p = swift[:n], pyin[:n]
    both = (s > 0) & (p > 0)
    cents = 1200 * np.log2(s[both] / p[both])
    return {"frames": n, "both": int(both.sum()), "swift_only": int(((s > 0) & (p == 0)).sum()),
            "pyin_only": int(((s == 0) & (p > 0)).sum()),
            "gross": int((np.abs(s[both] / p[both] - 1) > GROSS).sum()),
            "octave": int((np.abs(np.abs(cents) - 1200) < 100).sum()),
            "octave_up": int((np.abs(cents - 1200) < 100).sum()), "cents": np.abs(cents)}


def rates(parts: list[dict]) -> dict:
    frames = sum(c["frames"] for c in parts)
    both = sum(c["both"] for c in parts)
    cents = np.concatenate([c["cents"] for c in parts]) if parts else np.zeros(0)
    swift_only, pyin_only = sum(c["swift_only"] for c in parts), sum(c["pyin_only"] for c in parts)
    return {"frames": frames, "both_voiced": both,
            "gpe": round(sum(c["gross"] for c in parts) / max(1, both), 4),
            "octave": round(sum(c["octave"] for c in parts) / max(1, both), 4),
            "octave_up": round(sum(c["octave_up"] for c in parts) / max(1, both), 4),
            "median_cents": round(float(np.median(cents)), 1) if cents.size else None,
            "vde": round((swift_only + pyin_only) / max(1, frames), 4),
            "swift_only": round(swift_only / max(1, frames), 4), "pyin_only": round(pyin_only / max(1, frames), 4)}


def bootstrap(parts: list[dict], draws: int = 500, seed: int = 0) -> dict:
    """Spread (sd) of the pooled GPE, VDE and median cents over the clips, resampled with replacement."""
    rng = np.random.default_rng(seed)
    drawn = [rates([parts[i] for i in rng.integers(0, len(parts), len(parts))]) for _ in range(draws)]
    return {key: round(float(np.std([d[key] for d in drawn])), 4 if key != "median_cents" else 1)
            for key in ("gpe", "vde", "median_cents", "octave")}


def measure(call, chosen: list[Clip]) -> tuple[list[dict], list[np.ndarray]]:
    """counts() of each clip, with its name and speaker; and pYIN's frames of each (for voicing_sweep)."""
    parts, references = [], []
    for c in chosen:
        reference = pyin_frames(c.samples)
        parts.append({"clip": c.name, "speaker": c.speaker, **counts(swift_frames(call, c.samples), reference)})
        references.append(reference)
    return parts, references


def voicing_sweep(call, chosen: list[Clip], references: list[np.ndarray],
                  thresholds=(0.3, 0.4, 0.5, 0.6, 0.7)) -> dict:
    """The pooled rates with swift-f0's voicing threshold moved (the tab's slider): its raw
    frames once per clip, through the engine, then each threshold."""
    from tabs.pitch import model as pz

    raw = [call(pz.PITCH_MODEL, lambda detector, c=c: detector.detect(c.samples, RATE)) for c in chosen]
    return {str(t): rates([counts(np.where(r.confidence >= t, r.pitch_hz, 0.0), p) for r, p in zip(raw, references)])
            for t in thresholds}


# ------------------------------------------------------------------ speech with a known F0

def resynthesise(samples: np.ndarray, f0: np.ndarray, order: int = 18, seed: int = 0) -> np.ndarray:
    """The clip re-made with the pitch f0 (Hz per 16 ms frame, 0 where unvoiced): a harmonic
    source (every harmonic under 7 kHz, equal amplitude, its phase following f0 sample by sample)
    where voiced and white noise where not, each 16 ms of it scaled to the level of the clip's
    own LPC residual there and passed through the clip's LPC envelope (order 18, 32 ms Hann
    windows). What comes out has the clip's words, timbre and loudness and exactly the F0 given
    (pyworld, the usual vocoder for this, is not installed)."""
    import librosa
    from scipy.signal import lfilter

    n = len(f0) * HOP
    x = samples[:n].astype(np.float64)
    centres = np.arange(len(f0)) * HOP
    voiced = f0 > 0
    if not voiced.any():
        return np.random.default_rng(seed).standard_normal(n) * 1e-3
    hz = np.interp(np.arange(n), centres[voiced], f0[voiced])  # continuous, for the phase
    sample_voiced = voiced[np.minimum((np.arange(n) + HOP // 2) // HOP, len(f0) - 1)]
    phase = 2 * np.pi * np.cumsum(hz) / RATE
    source = np.zeros(n)
    for k in range(1, int(7000 / hz.min()) + 1):
        source += np.cos(k * phase) * (k * hz < 7000)
    noise = np.random.default_rng(seed).standard_normal(n)
    source = np.where(sample_voiced, source, noise)
    padded = np.pad(x, 2 * HOP)  # sample j sits at j + 2 * HOP
    window = np.hanning(2 * HOP)
    dither = 1e-7 * np.random.default_rng(seed + 1).standard_normal(2 * HOP)  # keeps silent frames solvable
    out, state = np.zeros(n), np.zeros(order)
    for i in range(len(f0)):
        frame = padded[i * HOP + HOP:i * HOP + 3 * HOP] * window + dither   # 32 ms centred on frame i
        a = librosa.lpc(frame, order=order)
        level = np.sqrt(np.mean(lfilter(a, [1.0], frame) ** 2) / np.mean(window ** 2))
        part = source[i * HOP:(i + 1) * HOP]
        part = part / max(1e-9, np.sqrt(np.mean(part ** 2))) * level
        out[i * HOP:(i + 1) * HOP], state = lfilter([1.0], a, part, zi=state)
    return (out / max(1e-9, np.abs(out).max()) * max(1e-3, np.abs(x).max())).astype(np.float32)


def known_f0_parts(call, chosen: list[Clip], references: list[np.ndarray]) -> tuple[list[dict], list[dict]]:
    """swift-f0 (as the tab runs it) and pYIN on each clip re-made with pYIN's own contour of it
    (resynthesise), against that known F0: GPE, octave errors and median cents over the voiced
    frames at least 2 frames from a voicing edge (where 'the' pitch is ill-defined), and the
    voicing error over all frames."""
    swift_parts, pyin_parts = [], []
    for c, f0 in zip(chosen, references):
        f0 = f0[:len(c.samples) // HOP]   # pYIN's centred frames run one past swift-f0's
        remade = resynthesise(c.samples, f0)
        inner = f0 > 0
        for shift in (1, 2):
            inner &= np.roll(f0 > 0, shift) & np.roll(f0 > 0, -shift)
        truth = np.where(inner, f0, 0.0)
        for parts, found in ((swift_parts, swift_frames(call, remade)), (pyin_parts, pyin_frames(remade))):
            found = np.pad(found[:len(f0)], (0, max(0, len(f0) - len(found))))
            pitch = counts(np.where(inner, found, 0.0), truth)
            voicing = counts(found, f0)
            parts.append({**pitch, "frames": voicing["frames"], "swift_only": voicing["swift_only"],
                          "pyin_only": voicing["pyin_only"]})
    return swift_parts, pyin_parts


def known_f0_rows(call, chosen: list[Clip], references: list[np.ndarray]) -> dict:
    """known_f0_parts pooled; "swift_only" here is voiced where the truth is unvoiced, "pyin_only"
    unvoiced where it is voiced."""
    swift_parts, pyin_parts = known_f0_parts(call, chosen, references)
    return {"swift-f0": {**rates(swift_parts), "bootstrap": bootstrap(swift_parts)}, "pyin": rates(pyin_parts),
            "clips": len(chosen)}


def summary(parts: list[dict]) -> dict:
    speakers = sorted({p["speaker"] for p in parts})
    ami = [p for p in parts if p["speaker"] not in GRADIO.values()]
    return {"pooled": {**rates(parts), "clips": len(parts), "speakers": len(speakers), "bootstrap": bootstrap(parts)},
            "ami": {**rates(ami), "clips": len(ami)},
            "interviews": {**rates([p for p in parts if p["speaker"] in GRADIO.values()])},
            "per_speaker": {s: {**rates([p for p in parts if p["speaker"] == s]),
                                "clips": sum(p["speaker"] == s for p in parts)} for s in speakers}}


def run(verbose: bool = True) -> dict:
    from tabs.pitch import specs

    missing = qd.ami_missing()
    if missing:
        raise SystemExit(missing)
    call = qd.bench_call(specs())

    started = time.perf_counter()
    chosen = clips()
    parts, references = measure(call, chosen)
    first = {c.name for c in clips(per_speaker=1)}  # what tests/test_pitch_quality.py measures
    result = {"data": "AMI solo clips (pyannote.audio 4.0.7 sdist) and gradio interview clips; reference: "
                      "librosa pYIN", **summary(parts),
              "first_clip_per_speaker": rates([p for p in parts if p["clip"] in first]),
              "voicing_sweep": voicing_sweep(call, chosen, references),
              "known_f0": known_f0_rows(call, chosen, references),
              "seconds": round(time.perf_counter() - started, 1)}
    if verbose:
        for name in ("pooled", "ami", "interviews"):
            r = result[name]
            spread = f" (sd {r['bootstrap']['gpe']:.1%})" if "bootstrap" in r else ""
            print(f"pitch vs pYIN, {name}: {r['frames']} frames, {r['both_voiced']} voiced by both: GPE {r['gpe']:.1%}"
                  f"{spread}, octave {r['octave']:.1%} (swift-f0 above: {r['octave_up']:.1%}), "
                  f"median |diff| {r['median_cents']} cents; VDE {r['vde']:.1%} (swift only {r['swift_only']:.1%}, "
                  f"pYIN only {r['pyin_only']:.1%})")
        for name, r in [("first clip per speaker", result["first_clip_per_speaker"]),
                        *((f"voicing >= {t}", r) for t, r in result["voicing_sweep"].items())]:
            print(f"pitch vs pYIN, {name}: GPE {r['gpe']:.1%}, median {r['median_cents']} cents, VDE {r['vde']:.1%} "
                  f"(swift only {r['swift_only']:.1%}, pYIN only {r['pyin_only']:.1%})")
        for tracker, r in result["known_f0"].items():
            if tracker != "clips":
                print(f"pitch, {tracker} on the clips re-made with a known F0: GPE {r['gpe']:.1%}, octave "
                      f"{r['octave']:.1%}, median |error| {r['median_cents']} cents; VDE {r['vde']:.1%} (voiced "
                      f"where unvoiced {r['swift_only']:.1%}, unvoiced where voiced {r['pyin_only']:.1%})")
        for speaker, r in result["per_speaker"].items():
            print(f"pitch vs pYIN, {speaker} ({r['clips']} clips): GPE {r['gpe']:.1%}, octave {r['octave']:.1%}, "
                  f"median {r['median_cents']} cents, VDE {r['vde']:.1%}")
    return result


if __name__ == "__main__":
    run()
