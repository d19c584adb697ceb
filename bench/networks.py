"""Every network the engine serves: load time, footprint and latency on its standard input.

The specs are enumerated from tabs.catalog.default_specs(), so a capability that lands shows up
here without an edit; one without an entry in STANDARD is listed with load and footprint only
("no standard input yet"). Each spec runs in a fresh child process, so its footprint and peak RSS
are its own.
- cold_load_s: the first load (file reads, session build, cached exports).
- load_s: median of 3 loads through the engine's pool, unloaded in between.
- footprint_mib: the load bytes the engine measured (what admission reserves for the model).
- latency_ms: the capability's processing function on the standard input, through a run's
  `call` as a tab or job calls it; median of 5 after one warm-up call.
- run_peak_mib: the engine's measured peak of one call on that input, above the loaded model
  (what admission reserves per call; footprint + run peak is what oom-stress sums).
- peak_rss_mib: the child's peak RSS over all of the above; base_rss_mib: its peak before the
  first load (Python, torch, every capability's module, the engine), the same for every spec.

Standard inputs: a 512 px photo (skimage's astronaut), a 512 px photo of printed text, a
sentence of text, about 5 s of speech (a Piper rendering of SENTENCE, made once per run in a
child of its own so that no network's child carries the voice).

`python -m bench networks [--json]`; `WIMMEL_BENCH_ONLY=silero-vad,ocr` limits the set.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
SENTENCE = "Hey computer, turn the lights on: many neural networks run side by side on one machine."
SPEECH = Path(tempfile.gettempdir()) / "wimmel-bench-speech.wav"
ASTRONAUT_FACE = {"box": [181.05, 62.16, 267.75, 172.05]}  # the shared detector's box on the photo
NO_INPUT = "no standard input yet"


# ---------------------------------------------------------------------------- standard inputs

def _photo() -> np.ndarray:
    from bench.capabilities import _photo as photo
    return photo()


def _text_photo() -> np.ndarray:
    from bench.capabilities import _text_photo as text_photo
    return text_photo()


def _speech() -> np.ndarray:
    from engine.media.audio import read_audio
    return read_audio(speech_file(), RATE)


def render_speech(path: Path) -> None:
    """SENTENCE spoken by the Piper voice at its own rate (run in a child of its own); read_audio
    resamples it to 16 kHz as it does any upload."""
    from engine.media.audio import write_wav
    from tabs.tts import model as tts

    write_wav(path, tts.render(tts.load("cpu"), tts.plan(SENTENCE)), tts.sample_rate())


def speech_file() -> Path:
    """The standard speech, rendered on first use (WIMMEL_BENCH_SPEECH names another file)."""
    path = Path(os.environ.get("WIMMEL_BENCH_SPEECH", SPEECH))
    if not path.exists():
        subprocess.run([sys.executable, "-m", "bench.networks", "--speech", str(path)], cwd=ROOT, check=True)
    return path


def _hand_photo() -> np.ndarray:
    """A real photo of an open hand, 640x480 (tests/data/hands: OpenCV's docs, Apache-2.0)."""
    from PIL import Image
    return np.asarray(Image.open(ROOT / "tests" / "data" / "hands" / "handSrc.jpg").convert("RGB"))


INPUTS = {"512 px photo": _photo, "hand photo": _hand_photo, "512 px text photo": _text_photo, "sentence": lambda: SENTENCE,
          "speech": _speech}


def _standard() -> dict:
    """spec name -> (input kind, what it runs, fn(call, input)): the capability's own function."""
    import soxr

    from analysers import face_detector, face_emotion, face_identity, nsfw
    from tabs.background import model as background
    from tabs.deblock import model as deblock
    from tabs.denoise import model as denoise
    from tabs.hands import model as hands
    from tabs.document import model as document, page as document_page
    from tabs.entities import model as entities
    from tabs.keywords import model as keywords
    from tabs.landmarks import faces as landmarks, model as landmarks_model
    from tabs.language import model as language
    from tabs.notes import model as notes
    from tabs.ocr import model as ocr
    from tabs.pitch import model as pitch
    from tabs.pose import model as pose
    from tabs.search import model as search
    from tabs.stt import model as stt
    from tabs.style import model as style
    from tabs.tags import model as tags
    from tabs.tts import model as tts
    from tabs.upscale import model as upscale
    from tabs.vad import model as vad
    from tabs.voices import model as voices

    def spot(call, samples):
        spotter = keywords.Spotter([keywords.bundled("computer")])
        call(keywords.KEYWORD_MODEL, lambda session: spotter.feed(session, samples))
        return call(keywords.KEYWORD_MODEL, spotter.finish)

    half = lambda s: len(s) // 2  # noqa: E731
    return {
        face_detector.FACE_DETECTOR: ("512 px photo", "detect_faces", lambda call, im: call(
            face_detector.FACE_DETECTOR, lambda m: face_detector.detect_faces(m, im))),
        face_identity.FACE_EMBEDDER: ("512 px photo", "embed one face", lambda call, im: call(
            face_identity.FACE_EMBEDDER, lambda m: m.embed(im, [ASTRONAUT_FACE]))),
        face_emotion.FACE_EMOTION: ("512 px photo", "emotions of one face",
                                    lambda call, im: face_emotion.emotions(call, im, [ASTRONAUT_FACE["box"]])),
        landmarks_model.FACE_MESH: ("512 px photo", "face mesh and irises (the detector's face first)",
                                    lambda call, im: landmarks.analyse(call, im, None)),
        pose.POSE_MODEL: ("512 px photo", "body pose", pose.poses_in),
        hands.HANDS_MODEL: ("hand photo", "hands", hands.hands_in),
        nsfw.NSFW_CLASSIFIER: ("512 px photo", "nsfw.score", nsfw.score),
        background.SEGMENTER: ("512 px photo", "person mask", background.segment),
        style.STYLE_PRESETS: ("512 px photo", "restyle, a preset",
                              lambda call, im: style.restyle(call, im, style.PRESETS[3])),
        style.STYLE_ARBITRARY: ("512 px photo", "restyle from a picture (skimage coffee)",
                                lambda call, im: style.restyle(call, im, style.FROM_IMAGE, _coffee())),
        upscale.UPSCALE_FAST: ("512 px photo", "upscale x2", lambda call, im: call(
            upscale.UPSCALE_FAST, lambda m: upscale.upscale(m, im, 2))),
        upscale.UPSCALE_X4PLUS: ("512 px photo", "upscale x4 of its 128 px corner (slow)", lambda call, im: call(
            upscale.UPSCALE_X4PLUS, lambda m: upscale.upscale(m, im[:128, :128], 4))),
        deblock.DEBLOCK: ("512 px photo", "clean up, strength 2", lambda call, im: call(
            deblock.DEBLOCK, lambda m: deblock.clean(m, im, 2))),
        ocr.OCR: ("512 px text photo", "read_text, 3 lines", lambda call, im: call(
            ocr.OCR, lambda m: ocr.read_text(m, im))),
        document.ORIENTATION: ("512 px text photo", "page orientation", document_page.orient_page),
        document.LAYOUT: ("512 px text photo", "page layout, upright", lambda call, im: document_page.analyse_page(
            call, im, fix_orientation=False)),
        entities.ENTITY_MODEL: ("sentence", "entities and parse", entities.analyse),
        language.LANGUAGE_MODEL: ("sentence", "detect", language.detect),
        search.EMBEDDER: ("sentence", "embed_all", lambda call, text: search.embed_all(call, [text])),
        tts.TTS_PIPER: ("sentence", "speak", lambda call, text: tts.speak(call, tts.plan(text))),
        stt.WHISPER: ("speech", "transcribe", stt.transcribe),
        vad.VAD_MODEL: ("speech", "detect_speech", vad.detect_speech),
        denoise.MODELS["deepfilternet"]: ("speech", "denoise",
                                          lambda call, s: denoise.denoise(call, s, RATE, "deepfilternet")),
        denoise.MODELS["rnnoise"]: ("speech", "denoise", lambda call, s: denoise.denoise(call, s, RATE, "rnnoise")),
        pitch.PITCH_MODEL: ("speech", "pitch", lambda call, s: pitch.pitch(call, s, RATE)),
        voices.VOICE_ENCODER: ("speech", "compare_voices, its two halves",
                               lambda call, s: voices.compare_voices(call, s[:half(s)], s[half(s):], RATE)),
        keywords.KEYWORD_MODEL: ("speech", "spot 'computer'", spot),
        tags.TAGS_MODEL: ("speech", "music tags", tags.tag_samples),
        notes.NOTES_MODEL: ("speech", "transcribe notes",
                            lambda call, s: notes.transcribe(call, soxr.resample(s, RATE, notes.SAMPLE_RATE))),
    }


def standard_workloads(models=None) -> dict:
    """spec name -> (fn(call, input), input): every model with a standard input (or those named in
    `models`), each input made once and shared (the speech is the Piper voice's, rendered once)."""
    inputs, work = {}, {}
    for name, (kind, _what, fn) in _standard().items():
        if models and name not in models:
            continue
        if kind not in inputs:
            inputs[kind] = INPUTS[kind]()
        work[name] = (fn, inputs[kind])
    return work


def _frame_720p() -> np.ndarray:
    """A 1280x720 frame: the astronaut photo, its face about 100 px wide, on a gray background."""
    from PIL import Image
    frame = np.full((720, 1280, 3), 128, np.uint8)
    frame[104:616, 384:896] = np.asarray(Image.fromarray(_photo()).resize((512, 512)))
    return frame


def _video_calls() -> dict:
    """spec name -> fn(call, frame): one 720p frame as the capability's video job handles it, for
    the models that run on video."""
    from analysers import face_detector
    from tabs.background import model as background
    from tabs.deblock import model as deblock
    from tabs.faces.tracks import faces_in_frames
    from tabs.hands import model as hands
    from tabs.landmarks import faces as landmarks, model as landmarks_model
    from tabs.ocr import model as ocr
    from tabs.pose import model as pose
    from tabs.style import model as style
    from tabs.upscale import model as upscale

    def anonymiser(call, frame, n=8):
        # A chunk of n frames, scanned every tracks.EVERY frames and followed in between: per frame.
        detector = face_detector.FACE_DETECTOR
        call(detector, lambda d: faces_in_frames(d, np.stack([frame] * n), 960 * 540))
        return n

    return {
        face_detector.FACE_DETECTOR: anonymiser,
        background.SEGMENTER: background.segment,
        style.STYLE_PRESETS: lambda call, im: style.restyle(call, im, style.PRESETS[3]),
        upscale.UPSCALE_FAST: lambda call, im: call(upscale.UPSCALE_FAST, lambda m: upscale.upscale(m, im, 2)),
        deblock.DEBLOCK: lambda call, im: call(deblock.DEBLOCK, lambda m: deblock.clean(m, im, 2)),
        ocr.OCR: lambda call, im: call(ocr.OCR, lambda m: ocr.read_text(m, im)),
        landmarks_model.FACE_MESH: lambda call, im: landmarks.analyse(call, im, 960 * 540),
        pose.POSE_MODEL: pose.poses_in,
        hands.HANDS_MODEL: hands.hands_in,
    }


def _fps_720p(engine, name: str, fn) -> float:
    """Frames per second on a 720p frame: median of 3 after a warm-up (1 when a frame takes > 5 s)."""
    frame, times = _frame_720p(), []
    for _ in range(4):
        started = time.perf_counter()
        with engine.run(f"bench {name} 720p") as run:
            frames = fn(run.call, frame)
        times.append((time.perf_counter() - started) / (frames if isinstance(frames, int) else 1))
        if times[0] > 5 and len(times) == 2:
            break
    return round(1 / statistics.median(times[1:]), 2)


def _coffee() -> np.ndarray:
    import skimage.data
    return skimage.data.coffee()


# ---------------------------------------------------------------------------- one spec

def measure(name: str, standard: dict | None = None) -> dict:
    """One spec's numbers, measured in this process (run it in a fresh one: `child`)."""
    from bench.common import reload_seconds
    from engine.measure import _read_hwm
    from tabs.catalog import build_engine

    standard = _standard() if standard is None else standard
    from engine.runtimes.torch_runtime import release_cached_memory

    engine = build_engine(data_dir=Path(tempfile.mkdtemp(prefix="wimmel-bench-")), store=False)
    # Garbage an earlier caller left (a test process) would otherwise be collected during the
    # load, and the heap it frees would cancel the load's growth: a footprint of 0.
    release_cached_memory()
    base = _read_hwm()   # Python, torch, the capabilities' modules and the engine: before any load
    started = time.perf_counter()
    engine.preload(name)
    cold = time.perf_counter() - started
    resident = next(row for row in engine.pool.snapshot() if row["name"] == name)
    footprint = resident["bytes"]
    loads = reload_seconds(engine, name, 3)
    row = {"cold_load_s": round(cold, 3),
           "load_s": round(statistics.median(loads), 3), "footprint_mib": round(footprint / 2**20, 1)}
    if name not in standard:
        row.update({"input": NO_INPUT, "latency_ms": None})
    else:
        kind, what, fn = standard[name]
        value = INPUTS[kind]()
        latencies = []
        for _ in range(6):   # the first is the warm-up
            started = time.perf_counter()
            with engine.run(f"bench {name}") as run:
                fn(run.call, value)
            latencies.append(time.perf_counter() - started)
        peaks = engine.footprints.get(name, str(resident["device"])).run_peak_bytes
        row.update({"input": kind, "call": what, "latency_ms": round(statistics.median(latencies[1:]) * 1000, 1),
                    "run_peak_mib": round(max(peaks.values(), default=0) / 2**20, 1)})
    video = _video_calls().get(name)
    if video is not None:
        row["fps_720p"] = _fps_720p(engine, name, video)
    row.update({"base_rss_mib": round(base / 2**20, 1), "peak_rss_mib": round(_read_hwm() / 2**20, 1)})
    return row


def child(name: str) -> None:
    print(json.dumps(measure(name)))


# ---------------------------------------------------------------------------- the scenario

def run(verbose: bool = True) -> dict:
    from tabs.catalog import default_specs

    specs = {spec.name: spec for spec in default_specs()}
    chosen = list(specs)
    if only := os.environ.get("WIMMEL_BENCH_ONLY"):
        chosen = [n for n in chosen if n in only.split(",")]
    result = {"scenario": "networks", "cpus": os.cpu_count(), "specs": len(specs),
              "networks_counted": sum(s.networks for s in specs.values()), "networks": {}}
    env = dict(os.environ)
    if any(_kind(n) == "speech" for n in chosen):
        env["WIMMEL_BENCH_SPEECH"] = str(speech_file())   # once, before the children
        from engine.media.audio import probe_audio
        result["speech_s"] = probe_audio(env["WIMMEL_BENCH_SPEECH"]).duration_s
    for name in chosen:
        done = subprocess.run([sys.executable, "-m", "bench.networks", name], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            row = {"function": specs[name].function, "error": lines[-1] if lines else f"exit {done.returncode}"}
        else:
            row = json.loads(done.stdout.strip().splitlines()[-1])
        row["function"] = specs[name].function
        row["runtime"] = specs[name].runtime
        result["networks"][name] = row
        if verbose:
            print(f"{name}: {row}", flush=True)
    return result


def _kind(name: str) -> str | None:
    """The input kind of a spec's standard input, without importing every capability's model."""
    try:
        return _standard().get(name, (None,))[0]
    except ImportError:
        return None


# ---------------------------------------------------------------------------- the page

COLUMNS = ("model", "function", "runtime", "cold load s", "load s", "footprint MiB", "standard input",
           "latency ms", "run peak MiB", "720p fps (video)", "peak RSS MiB (before load)")


def render(fields: dict) -> list[str]:
    """Markdown lines for docs/benchmarks.md: one row per spec (report.py calls this)."""
    lines = [f"{len(fields['networks'])} of {fields['specs']} models measured "
             f"({fields['networks_counted']} networks counted); speech input "
             f"{fields.get('speech_s', '-')} s; latency: median of 5 after a warm-up; 720p fps: a 1280x720 "
             "frame as the model's video job handles it (the anonymiser: a chunk of 8, scanned every 4th).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for name, row in fields["networks"].items():
        if "error" in row:
            cells = [name, row["function"], row.get("runtime", ""), "-", "-", "-", "**failed**: " + row["error"],
                     "-", "-", "-", "-"]
        else:
            what = row["input"] if row["input"] == NO_INPUT else f"{row['input']}: {row['call']}"
            cells = [name, row["function"], row.get("runtime", ""), row["cold_load_s"], row["load_s"],
                     row["footprint_mib"], what, "-" if row["latency_ms"] is None else row["latency_ms"],
                     row.get("run_peak_mib", "-"), row.get("fps_720p", "-"),
                     f"{row['peak_rss_mib']} ({row['base_rss_mib']})"]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return lines


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if sys.argv[1] == "--speech":
        render_speech(Path(sys.argv[2]))
    else:
        child(sys.argv[1])
