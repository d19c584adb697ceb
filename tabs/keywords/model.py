"""Keyword spotting with efficientword-net 1.0.5 (Apache-2.0): its ResNet-50 trained with ArcFace
loss maps 1.5 s of 16 kHz audio (log mel features, features.py) to a unit 2048-d embedding; a
keyword is a few embeddings of it spoken alone (the wheel's sample_refs/<word>_ref.json hold 7
each, or the user's 1-6 recordings), and a window's score for it is the package's:
max over those embeddings of (cosine + 1) / 2 (Resnet50_Arc_loss.scoreVector).

The package's windowing, from its streams and examples: 1.5 s windows stepped by 0.75 s
(SimpleMicStream(window_length_secs=1.5, sliding_window_secs=0.75)), threshold 0.7; where several
keywords pass, the window goes to the best one (MultiHotwordDetector.findBestMatch). The network
was trained on single words: a keyword said alone (a pause around it) scores 0.8-0.95, the same
word run into a sentence often stays under 0.7.

A file streams through in chunks (one chunk and a window in memory). Overlapping windows that
pass for one keyword are one detection (the package's relaxation time, for files); its time is
found inside its best window: the stretch of sound between pauses that, cut out and centred in
1.5 s of silence as the package builds its references, scores highest for the keyword.
"""
from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine import Call, JobContext, ModelSpec, UserFacingError
from engine.files import write_json
from engine.media.audio import probe_audio, read_audio, stream_audio
from engine.package_files import package_folder, reason_if_missing
from engine.predict import seconds_bucket as seconds_key
from engine.runtimes import onnx_runtime

from .features import SAMPLE_RATE, WINDOW, log_mel

MiB = 1024**2
KEYWORD_MODEL = "efficientword-resnet50"
KEYWORDS_LONG = "spot_keywords_long"
STEP_S = 0.75   # the package's sliding window
THRESHOLD = 0.7  # the package's examples and single_word_test
INTERACTIVE_MAX_S = 60.0  # longer files run as a job
CHUNK_S = 30.0  # samples decoded at a time
BATCH = 16      # windows per ONNX call
MAX_SAMPLES = 6
BLOCK = 160     # 10 ms: the loudness step used to find pauses
BUNDLED = ("alexa", "balloon", "computer", "lights_off", "lights_on", "mobile", "mycroft")

# On the CPU the wheel's qint8 graph, chosen by measurement: the float graph's scores within
# 0.005 and the same detections on the tests' speech, 20-30 % faster, 73 MiB against 240 MiB of
# RSS. On a GPU the float graph (its int8 Q/DQ nodes only emulate int8 there; not measured here).
WEIGHTS = "slim_93%_accuracy_72.7390%_qint8.onnx"
FLOAT_WEIGHTS = "slim_93%_accuracy_72.7390%.onnx"
_MISSING = ("efficientword-net is not installed: run ./setup.sh (it installs "
            "efficientword-net==1.0.5 --no-deps, whose wheel holds the ResNet-50 keyword network)")


def weights_path(name: str = WEIGHTS) -> Path:
    return package_folder("eff_word_net", "models/resnet_50_arc", [name], _MISSING) / name


def references_folder() -> Path:
    return package_folder("eff_word_net", "sample_refs", [f"{w}_ref.json" for w in BUNDLED], _MISSING)


def unavailable_reason() -> str | None:
    return reason_if_missing(lambda: (weights_path(WEIGHTS), weights_path(FLOAT_WEIGHTS), references_folder()))


def seconds_bucket(seconds: float) -> str:
    """Input size in seconds ('s:12.5'): memory follows the chunk, not the file, so the length
    counts up to one chunk; short files are smaller."""
    return seconds_key(min(seconds, CHUNK_S))


# ---------------------------------------------------------------------------------- model

def batched_graph(path: Path) -> bytes:
    """The network with a free batch size. Its graph min-max normalises each input through
    Reshapes to [1, -1], [1, 1] and [1, 1, 149, 64]; a leading 0 ("keep this dimension") in
    their place gives the same numbers per window for any batch."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path))
    initializers = {i.name: i for i in graph.graph.initializer}
    shapes = {node.input[1] for node in graph.graph.node if node.op_type == "Reshape"}
    for name in shapes:
        value = numpy_helper.to_array(initializers[name]).copy()
        if value[0] != 1:
            raise RuntimeError(f"{path.name}: a Reshape to {value.tolist()} is not the graph this code knows")
        value[0] = 0
        initializers[name].CopyFrom(numpy_helper.from_array(value, name))
    for value in (graph.graph.input[0], graph.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return graph.SerializeToString()


def load(device: str, weights: str | None = None):
    """An onnxruntime session on `device` ('cpu' or 'cuda:N') that takes [n, 1, 149, 64]; the
    qint8 weights on the CPU, the float ones on a GPU, unless `weights` names one."""
    weights = weights or (WEIGHTS if device == "cpu" else FLOAT_WEIGHTS)
    return onnx_runtime.session(batched_graph(weights_path(weights)), device)


def embed(session, windows: np.ndarray) -> np.ndarray:
    """[n, 24000] samples -> [n, 2048] unit embeddings, BATCH windows per call."""
    windows = np.asarray(windows).reshape(-1, WINDOW)
    out = [session.run(None, {"input": log_mel(windows[i:i + BATCH])})[0]
           for i in range(0, len(windows), BATCH)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2048), np.float32)


# ---------------------------------------------------------------------------------- keywords

@dataclass(frozen=True)
class Keyword:
    name: str
    embeddings: np.ndarray  # [k, 2048], unit length

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """The package's score per window: max over the references of (cosine + 1) / 2. A window of
        digital silence has no embedding (NaN: the graph's min-max normalisation divides by 0): 0."""
        return np.nan_to_num((embeddings @ self.embeddings.T).max(axis=1) / 2 + 0.5, nan=0.0)


@functools.lru_cache(maxsize=None)
def bundled(name: str) -> Keyword:
    data = json.loads((references_folder() / f"{name}_ref.json").read_text())
    return Keyword(name.replace("_", " "), np.asarray(data["embeddings"], np.float32))


def bundled_names() -> list[str]:
    """The words the wheel has references for, as people would write them ('lights on')."""
    return [name.replace("_", " ") for name in BUNDLED]


def loud_runs(samples: np.ndarray, below_peak_db: float = 30.0, bridge_s: float = 0.12,
              shortest_s: float = 0.05) -> list[tuple[int, int]]:
    """Sample ranges of sound between pauses: 10 ms blocks within `below_peak_db` of the loudest
    (and above -55 dBFS); pauses shorter than `bridge_s` (a stop consonant) are bridged."""
    count = samples.size // BLOCK
    if count == 0:
        return []
    power = np.square(samples[: count * BLOCK].astype(np.float64)).reshape(count, BLOCK).mean(axis=1)
    level = 10 * np.log10(power + 1e-12)
    loud = (level >= level.max() - below_peak_db) & (level > -55)
    runs: list[list[int]] = []
    for i in np.flatnonzero(loud):
        if runs and i - runs[-1][1] <= bridge_s * 100:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(a * BLOCK, b * BLOCK) for a, b in runs if (b - a) >= shortest_s * 100]


def centred(samples: np.ndarray) -> np.ndarray:
    """1.5 s with `samples` in the middle; longer sound gives its loudest 1.5 s. (The package
    pads or crops at a random place; the middle gives the same answer every time.)"""
    samples = np.asarray(samples, np.float32)
    if samples.size > WINDOW:
        energy = np.concatenate([[0.0], np.cumsum(np.square(samples, dtype=np.float64))])
        start = int(np.argmax(energy[WINDOW:] - energy[:-WINDOW]))
        return samples[start:start + WINDOW]
    out = np.zeros(WINDOW, np.float32)
    start = (WINDOW - samples.size) // 2
    out[start:start + samples.size] = samples
    return out


def word_of(recording: np.ndarray) -> np.ndarray:
    """A recording of one keyword, silence trimmed and centred in 1.5 s."""
    runs = loud_runs(recording)
    if not runs:
        raise UserFacingError("A keyword recording is silent: record the word spoken clearly.")
    return centred(recording[runs[0][0]:runs[-1][1]])


def keyword_from_recordings(call: Call, name: str, recordings: list[np.ndarray]) -> Keyword:
    """A keyword from 1-6 recordings of it (16 kHz): one embedding each, as the package's
    generate_reference keeps them (it scores by the best match, not an average)."""
    windows = np.stack([word_of(r) for r in recordings])
    return Keyword(name, call(KEYWORD_MODEL, lambda session: embed(session, windows)))


def keyword_from_files(call: Call, name: str, paths: list) -> Keyword:
    return keyword_from_recordings(call, name, [read_audio(p, SAMPLE_RATE, max_seconds=10) for p in paths])


# ---------------------------------------------------------------------------------- spotting

@dataclass
class _Open:
    """A run of passing windows for one keyword: its best window so far."""
    score: float
    start: int               # sample where the best window starts
    samples: np.ndarray      # that window


@dataclass
class Spotter:
    """Feeds 16 kHz audio in chunks of any size; keeps one chunk and one window."""
    keywords: list[Keyword]
    threshold: float = THRESHOLD
    step_s: float = STEP_S
    detections: list[dict] = field(default_factory=list)
    windows: int = 0
    _buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    _buffer_start: int = 0   # file sample of _buffer[0]
    _next: int = 0           # file sample where the next window starts
    _total: int = 0
    _open: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self._total / SAMPLE_RATE

    @property
    def step(self) -> int:
        return int(round(self.step_s * SAMPLE_RATE))

    def feed(self, session, chunk: np.ndarray) -> None:
        self._buffer = np.concatenate([self._buffer, np.asarray(chunk, np.float32).reshape(-1)])
        self._total += chunk.size
        starts = list(range(self._next, self._total - WINDOW + 1, self.step))
        if starts:
            self._score(session, starts)
            self._next = starts[-1] + self.step
        drop = self._next - self._buffer_start
        self._buffer, self._buffer_start = self._buffer[drop:], self._next

    def finish(self, session) -> list[dict]:
        """Windows over the tail (zero-padded to 1.5 s), open detections closed; all, in order."""
        covered = self._next - self.step + WINDOW if self.windows else 0
        starts, start = [], self._next
        while covered < self._total:
            starts.append(start)
            covered, start = start + WINDOW, start + self.step
        if starts:
            self._score(session, starts)
        for keyword in list(self._open):
            self._close(session, keyword)
        # Neighbouring windows may go to different keywords ('lights off', then 'lights on'):
        # where two found words overlap, the better score stands.
        kept: list[dict] = []
        for found in sorted(self.detections, key=lambda d: -d["score"]):
            if all(found["end"] <= k["start"] or found["start"] >= k["end"] for k in kept):
                kept.append(found)
        return sorted(kept, key=lambda d: (d["start"], d["keyword"]))

    def _window(self, start: int) -> np.ndarray:
        piece = self._buffer[start - self._buffer_start:start - self._buffer_start + WINDOW]
        return piece if piece.size == WINDOW else np.pad(piece, (0, WINDOW - piece.size))

    def _score(self, session, starts: list[int]) -> None:
        windows = np.stack([self._window(s) for s in starts])
        embeddings = embed(session, windows)
        scores = np.stack([k.scores(embeddings) for k in self.keywords], axis=1)
        self.windows += len(starts)
        for row, (start, window) in enumerate(zip(starts, windows)):
            best = int(np.argmax(scores[row]))
            winner = best if scores[row, best] >= self.threshold else None
            for index, keyword in enumerate(self.keywords):
                current = self._open.get(keyword.name)
                if index != winner:
                    if current is not None:
                        self._close(session, keyword.name)
                elif current is None or scores[row, index] > current.score:
                    self._open[keyword.name] = _Open(float(scores[row, index]), start, window.copy())

    def _close(self, session, name: str) -> None:
        found = self._open.pop(name)
        keyword = next(k for k in self.keywords if k.name == name)
        a, b = locate(session, keyword, found.samples)
        self.detections.append({"keyword": name, "start": round(float(found.start + a) / SAMPLE_RATE, 2),
                                "end": round(float(found.start + b) / SAMPLE_RATE, 2), "score": round(found.score, 3)})


def locate(session, keyword: Keyword, window: np.ndarray) -> tuple[int, int]:
    """Where in a passing window the keyword is: of the stretches between pauses (and runs of
    neighbouring ones up to 1.5 s), the one that scores highest alone in silence."""
    runs = loud_runs(window)[:8]
    spans = [(runs[i][0], runs[j][1]) for i in range(len(runs)) for j in range(i, len(runs))
             if runs[j][1] - runs[i][0] <= WINDOW]
    if not spans:
        return 0, WINDOW
    scores = keyword.scores(embed(session, np.stack([centred(window[a:b]) for a, b in spans])))
    return spans[int(np.argmax(scores))]


def spot_file(call: Call, path, keywords: list[Keyword], threshold: float = THRESHOLD,
              step_s: float = STEP_S, on_chunk: Callable[[float], None] | None = None) -> dict:
    """Keywords in an audio file (or a video's sound), streamed in 30 s chunks, each chunk one lease.

    Returns {"detections": [{"keyword", "start", "end", "score"}], "duration_s", "windows",
    "threshold", "step_s", "keywords"}; times in seconds. on_chunk(seconds done) after each chunk.
    """
    spotter = Spotter(keywords, float(threshold), float(step_s))
    with contextlib.closing(stream_audio(path, SAMPLE_RATE, CHUNK_S)) as pieces:
        for _, chunk in pieces:
            call(KEYWORD_MODEL, lambda session: spotter.feed(session, chunk))
            if on_chunk:
                on_chunk(spotter.seconds)
    if spotter.seconds == 0:
        raise UserFacingError("The audio could not be read: it is empty, or corrupt.")
    detections = call(KEYWORD_MODEL, spotter.finish)
    return {"detections": detections, "duration_s": round(spotter.seconds, 3),
            "windows": spotter.windows, "threshold": float(threshold), "step_s": float(step_s),
            "keywords": [k.name for k in keywords]}


def keywords_for(call: Call, names: list[str], custom_name: str = "", samples: list | None = None) -> list[Keyword]:
    """The bundled keywords named (as bundled_names() spells them) and the custom one, if recorded."""
    chosen = [bundled(name.replace(" ", "_")) for name in names]
    if samples:
        name = custom_name.strip() or "my keyword"
        name = f"{name} (yours)" if name in names else name   # detections are told apart by name
        chosen.append(keyword_from_files(call, name, samples))
    return chosen


def spot_job(ctx: JobContext) -> str:
    """Job kind spot_keywords_long: params keywords (names), threshold, step_s, custom_name; inputs
    'audio' and 'sample_1'.. (recordings of the custom keyword). Writes keywords.json (what
    spot_file returns). A killed job starts again from the beginning (about 2 min per hour of audio)."""
    params = ctx.params
    samples = sorted((n for n in params["inputs"] if n.startswith("sample_")), key=lambda n: int(n[7:]))
    keywords = keywords_for(ctx.call, list(params.get("keywords", [])), params.get("custom_name", ""),
                            [ctx.input(n) for n in samples])
    source = ctx.input("audio")
    total = probe_audio(source).duration_s or 0.0

    def on_chunk(done: float) -> None:
        ctx.check_cancelled()
        ctx.progress(0.99 * min(done / max(total, 1.0), 1.0), f"keywords: {done / 60:.1f} of {total / 60:.1f} min")

    result = spot_file(ctx.call, source, keywords, float(params.get("threshold", THRESHOLD)),
                       float(params.get("step_s", STEP_S)), on_chunk)
    out = ctx.work_dir / "keywords.json"
    write_json(out, result)
    return str(out)


# ---------------------------------------------------------------------------------- catalog

def specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=KEYWORD_MODEL, role="interactive", runtime="onnxruntime", loader=load,
            device=onnx_runtime.spec_device(),
            source="efficientword-net 1.0.5 wheel: models/resnet_50_arc/slim_93%_accuracy_72.7390%"
                   "[_qint8].onnx + sample_refs/*_ref.json (Apache-2.0)",
            # Measured on CPU (qint8): the session adds ~73 MiB RSS (the float one ~240 MiB); a
            # pass over 30 s chunks peaks ~110 MiB above it (ONNX Runtime's arena, 16 windows a call).
            estimate_bytes=80 * MiB, run_estimate_bytes=128 * MiB,
            function="keyword spotting (speech embedding)",
            description="EfficientWord-Net ResNet-50 (ArcFace): 1.5 s of speech -> 2048-d embedding; "
                        "few-shot keyword spotting"),
    ]
