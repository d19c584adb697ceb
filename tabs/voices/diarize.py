"""Who speaks when, with resemblyzer's speaker encoder (the model and compare_voices: model.py,
which re-exports what this module offers; this one holds the audio helpers both use).

- diarize: voice prints of 1.6 s windows every WINDOW_STEP_S, and of the 0.8 s in each one's
  middle; the 1.6 s windows mostly of speech (by webrtcvad on the recording as it is) grouped
  into the requested number of speakers (Ward clustering), each group's centroid taken among
  its 0.8 s prints; each 30 ms of speech (webrtcvad on the recording raised towards
  resemblyzer's -30 dBFS, by at most VAD_MAX_GAIN_DB dB) goes to the speaker whose centroid the
  0.8 s windows around it resemble most (each window's score placed at the middle of its
  speech), so a turn lands between windows and a short one is still heard. Inputs over LONG_S
  run as a diarize_long job that embeds the file chunk by chunk.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from engine import Call, JobContext, UserFacingError
from engine.files import save_arrays, write_json
from engine.media.audio import probe_audio, stream_audio

VOICE_ENCODER = "voice-encoder"
DIARIZE_LONG = "diarize_long"

RATE = 16000  # the encoder's rate
LONG_S = 60.0  # longer recordings are diarized as a job
MAX_SPEAKERS = 8

WINDOW_S = 1.6  # the encoder's partial utterance (160 mel frames of 10 ms)
WINDOW_STEP_S = 0.25  # 6.4 windows per second of audio: the main cost of diarization
_MEL_HOP = 160  # samples per mel frame (10 ms)
_WINDOW_FRAMES = 160
# Speech is assigned on the prints of the 0.8 s in the middle of each window: the 1.6 s print
# averages over turns and backchannels shorter than itself. On AMI's train files the median
# turn-boundary error went from 2.13 to 1.74 s, on the held-out ones from 0.64 to 0.35 s, for
# about 40 % more encoder time. Voices are grouped on the steadier 1.6 s prints, but their
# centroids are taken among the 0.8 s prints, where speech is assigned: the centroids, not the
# assignment, were what misplaced turns on AMI (given the true speakers' centroids the
# assignment puts all 14 files' edges at 0.48 s). Centred there: all 14 from 1.01 to 0.64 s
# (train 1.92 to 1.21 s, held-out 0.35 to 0.26 s), DER +0.2 points (docs/quality.md).
SHORT_WINDOW_S = 0.8
_SHORT_FRAMES = 80
PRINTS_FORMAT = "1.6s+0.8s"   # what a diarize_long checkpoint's chunk files hold
_STEP_FRAMES = int(WINDOW_STEP_S * 100)
_VAD_WINDOW = 480  # webrtcvad takes 10, 20 or 30 ms: 30 ms at 16 kHz
_MIN_GAP_S = 0.3  # a pause shorter than this does not split one speaker's segment
_MIN_SPEECH_RUN_S = 0.15  # speech shorter than this is a click, not speech
# A speaker's run shorter than this next to another's speech is a blip. 0.3 s before the short
# prints; with them 0.25 s keeps more backchannels such as "yeah". AMI's train files liked 0.15 s
# best, within their noise of 0.25 s (held-out and pyannote-sample: the same), but at 0.15 s the
# tail of a turn came out as the next speaker's in 5 of 90 renderings of test_voices' dialogue
# (0.25 s: 0 of 40).
_MIN_TURN_S = 0.25
_BLIP_BRIDGE_S = 0.2  # a pause shorter than this is a stop inside speech, not between turns
_MAX_CLUSTERED = 3000  # windows clustered directly (Ward is quadratic); the rest are assigned
CHUNK_S = 60.0  # a diarize_long job's unit of decoding and resumption (a multiple of 0.75 s)
# Chunks hold whole 30 ms speech flags and whole window steps: a multiple of 12,000 samples (0.75 s).
CHUNK_GRID = int(np.lcm(_VAD_WINDOW, _STEP_FRAMES * _MEL_HOP))
# The VAD misses quiet meeting speech (AMI peaks at 0.06-0.64 of full scale): it hears the
# recording raised towards resemblyzer's -30 dBFS, by at most VAD_MAX_GAIN_DB. Unbounded, a
# near-silent file (AMI trn02, -51 dBFS) is raised 21 dB and its hiss becomes speech; on AMI the
# full raise cost more in false alarms than it found (bench/quality.py, docs/quality.md).
VAD_TARGET_DBFS = -30.0
VAD_MAX_GAIN_DB = 6.0
# Voices are grouped on the windows the VAD calls speech at the recording's own volume
# (group_on_unraised): the raised VAD's extra speech is fainter, and grouping it too moved whole
# turns to the wrong voice. Both are parameters so that bench quality measures each step.


# ---------------------------------------------------------------------------------- audio

def mono16k(samples: np.ndarray, sr: int) -> np.ndarray:
    """float32 samples at 16 kHz, stereo mixed down."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if int(sr) != RATE and samples.size:
        import librosa

        samples = librosa.resample(samples, orig_sr=int(sr), target_sr=RATE, res_type="soxr_hq").astype(np.float32)
    return samples


def vad_gain_db(wav: np.ndarray, max_gain_db: float = VAD_MAX_GAIN_DB) -> float:
    """How many dB speech_flags raises this recording by (towards VAD_TARGET_DBFS)."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    return 0.0 if rms <= 1e-6 else min(max_gain_db, max(0.0, VAD_TARGET_DBFS - 20 * np.log10(rms)))


def speech_flags(wav: np.ndarray, gain_db: float = 0.0) -> np.ndarray:
    """webrtcvad's speech / no speech per 30 ms window (the last partial window is dropped), on
    the recording raised by gain_db."""
    import webrtcvad

    vad = webrtcvad.Vad(3)  # most aggressive: noise and breaths are not speech
    n = len(wav) // _VAD_WINDOW
    pcm = (np.clip(wav[: n * _VAD_WINDOW] * 10 ** (gain_db / 20), -1, 1) * 32767).astype("<i2").tobytes()
    step = _VAD_WINDOW * 2
    return np.array([vad.is_speech(pcm[i * step:(i + 1) * step], RATE) for i in range(n)], dtype=bool)


def both_flags(wav: np.ndarray, max_gain_db: float = VAD_MAX_GAIN_DB) -> dict:
    """{"flags": the raised VAD's, "unraised": the VAD's at the recording's own volume}."""
    gain = vad_gain_db(wav, max_gain_db)
    unraised = speech_flags(wav)
    return {"flags": speech_flags(wav, gain) if gain > 0 else unraised, "unraised": unraised}


def _runs(values: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, value) of each run of equal values."""
    if values.size == 0:
        return []
    edges = np.flatnonzero(np.diff(values.astype(np.int64))) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [values.size]])
    return [(int(a), int(b), int(values[a])) for a, b in zip(starts, ends)]


def drop_clicks(flags: np.ndarray) -> np.ndarray:
    """Speech flags without runs too short to be speech."""
    flags = flags.copy()
    for a, b, speech in _runs(flags):
        if speech and (b - a) * _VAD_WINDOW / RATE < _MIN_SPEECH_RUN_S:
            flags[a:b] = False
    return flags


# ---------------------------------------------------------------------------------- embedding

@contextlib.contextmanager
def one_thread():
    """Run the encoder on one torch thread (per calling thread, as the job workers do): the
    small LSTM gains nothing from a second one, and a second thread spinning on a busy machine
    slows every call several times over."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _embed_mels(encoder, mels: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad(), one_thread():
        device = next(encoder.parameters()).device
        return encoder(torch.from_numpy(np.ascontiguousarray(mels)).to(device)).cpu().numpy()


def window_prints(encoder, wav16k: np.ndarray, offset: int = 0, min_start: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(start mel frame of each window, its voice prints: (windows, 2, 256), [:, 0] of the
    window, [:, 1] of the SHORT_WINDOW_S in its middle) for every whole 1.6 s window of
    `wav16k` on the WINDOW_STEP_S grid. Frames are counted from the recording's start:
    `wav16k` begins at frame `offset`, and windows starting before `min_start` are skipped.
    Volume is normalised as resemblyzer does; silences stay in place."""
    from resemblyzer import audio

    frames = offset + len(wav16k) // _MEL_HOP
    first = -(-max(min_start, offset) // _STEP_FRAMES) * _STEP_FRAMES  # the grid point at or after
    starts = np.arange(first, frames - _WINDOW_FRAMES + 1, _STEP_FRAMES)
    if starts.size == 0:
        return starts, np.zeros((0, 2, 256), np.float32)
    if float(np.sqrt(np.mean(wav16k**2))) > 1e-6:
        wav16k = audio.normalize_volume(wav16k, audio.audio_norm_target_dBFS, increase_only=True)
    mel = audio.wav_to_mel_spectrogram(wav16k)
    mels = np.stack([mel[s - offset:s - offset + _WINDOW_FRAMES] for s in starts])
    inner = (_WINDOW_FRAMES - _SHORT_FRAMES) // 2
    prints = [np.stack([_embed_mels(encoder, part[:, a:a + n])
                        for a, n in ((0, _WINDOW_FRAMES), (inner, _SHORT_FRAMES))], axis=1)
              for part in (mels[i:i + 64] for i in range(0, len(mels), 64))]
    return starts, np.concatenate(prints)


# ---------------------------------------------------------------------------------- turns

def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _cluster(prints: np.ndarray, speakers: int, space: np.ndarray | None = None) -> np.ndarray:
    """Centroids (unit length) of `speakers` groups of voice prints. space: other prints of the
    same windows, row for row: the groups' centroids are taken there, then refined by one
    k-means step over all its rows."""
    within = prints if space is None else space
    if speakers == 1 or len(prints) == 1:
        return _unit_rows(within.mean(axis=0))[None]
    from sklearn.cluster import AgglomerativeClustering

    # Ward on unit vectors (euclidean ~ cosine) makes groups of similar size: a single odd window
    # (one straddling a turn) does not become a "speaker" of its own, as it can with average linkage.
    rows = np.linspace(0, len(prints) - 1, min(len(prints), _MAX_CLUSTERED)).astype(int)
    labels = AgglomerativeClustering(n_clusters=speakers, linkage="ward").fit_predict(prints[rows])
    centroids = _unit_rows(np.stack([within[rows][labels == k].mean(axis=0) for k in range(speakers)]))
    if space is None:
        return centroids
    labels = (space @ centroids.T).argmax(axis=1)
    return _unit_rows(np.stack([space[labels == k].mean(axis=0) if (labels == k).any() else centroids[k]
                                for k in range(speakers)]))


def segments_from(starts: np.ndarray, prints: np.ndarray, flags: np.ndarray, speakers: int,
                  unraised: np.ndarray | None = None, group_on_unraised: bool = True,
                  assign_on_short: bool = True, min_turn_s: float = _MIN_TURN_S,
                  centre_on_short: bool = True, centroids: np.ndarray | None = None) -> list[dict]:
    """Speaker turns from window prints (start mel frames; window_prints' pairs, or 1.6 s prints
    alone) and raw 30 ms speech flags (those of the raised recording; `unraised`: the VAD's at
    its own volume, which choose the windows that are grouped unless group_on_unraised is False).
    assign_on_short: speech goes to speakers by the 0.8 s prints (else by the 1.6 s ones), and
    centre_on_short: the voices grouped on the 1.6 s prints have their centroids taken among
    the 0.8 s ones (_cluster's space); min_turn_s: runs of a speaker shorter than this join
    their neighbour's turn. centroids: the speakers' voices (unit rows, in the space of the
    prints speech is assigned by) instead of grouping; bench quality gives the true speakers'
    to measure the assignment alone."""
    short = prints[:, 1] if prints.ndim == 3 and assign_on_short else None
    prints = prints[:, 0] if prints.ndim == 3 else prints
    speech = drop_clicks(flags)
    per_flag = _VAD_WINDOW // _MEL_HOP  # 3 mel frames per 30 ms flag

    def spans_of(speech_flags_):
        return [speech_flags_[s // per_flag:(s + _WINDOW_FRAMES) // per_flag] for s in starts]

    def mostly_speech(spans_):
        # Windows mostly of speech carry a voice; the rest would only blur the groups.
        return np.array([span.size > 0 and span.mean() >= 0.5 for span in spans_], dtype=bool)

    spans = spans_of(speech)
    voiced = mostly_speech(spans)
    if not speech.any() or not voiced.any():
        return []
    grouped = mostly_speech(spans_of(drop_clicks(unraised))) if unraised is not None and group_on_unraised else voiced
    grouped = grouped if grouped.any() else voiced  # quiet throughout: the raised VAD's windows
    if centroids is None:
        space = short[grouped] if short is not None and centre_on_short else None
        centroids = _cluster(prints[grouped], min(speakers, int(grouped.sum())), space)
    if short is not None:  # the short windows' own speech decides which of them carry a voice
        inner = starts + (_WINDOW_FRAMES - _SHORT_FRAMES) // 2
        inner_spans = [speech[s // per_flag:(s + _SHORT_FRAMES) // per_flag] for s in inner]
        if mostly_speech(inner_spans).any():  # else (speech only at the edges) the 1.6 s prints
            starts, spans, voiced, prints = inner, inner_spans, mostly_speech(inner_spans), short
    scores = prints[voiced] @ centroids.T  # (windows, speakers)
    # A window's voice is where its speech is: place its scores at the middle of its speech,
    # not of the window, so that a window half silence does not reach across the pause.
    centres = np.array([(s // per_flag + np.flatnonzero(span).mean() + 0.5) * _VAD_WINDOW / RATE
                        for s, span, v in zip(starts, spans, voiced) if v])
    centres = np.maximum.accumulate(centres)
    # Each 30 ms of speech goes to the speaker its neighbouring windows resemble most.
    times = (np.arange(speech.size) + 0.5) * _VAD_WINDOW / RATE
    curves = np.stack([np.interp(times, centres, scores[:, k]) for k in range(len(centroids))], axis=1)
    return segments_of_owner(np.where(speech, curves.argmax(axis=1), -1), min_turn_s)


def segments_of_owner(owner: np.ndarray, min_turn_s: float = _MIN_TURN_S) -> list[dict]:
    """Segments from the speaker of each 30 ms flag (-1: no speech), short runs absorbed as in
    segments_from (bench quality also gives it the true speakers, for what the VAD's edges allow)."""
    owner = _absorb_short_turns(owner, int(round(min_turn_s * RATE / _VAD_WINDOW)),
                                int(round(_BLIP_BRIDGE_S * RATE / _VAD_WINDOW)))
    return _segments(owner)


def _absorb_short_turns(owner: np.ndarray, min_len: int, bridge: int) -> np.ndarray:
    """Runs of a speaker shorter than min_len are blips at the edge of a turn, not turns: each
    consecutive chain of them takes the speaker of the nearest long run it is joined to (pauses
    under `bridge` flags join; longer ones separate turns). A chain at the start of speech that
    leads into one long run becomes all that run's speaker, whatever order its blips came in."""
    runs = [r for r in _runs(owner) if r[2] >= 0]
    if not runs:
        return owner
    owner = owner.copy()
    joined = [b[0] - a[1] < bridge for a, b in zip(runs, runs[1:])]  # run i joined to run i+1
    long = [b - a >= min_len for a, b, _ in runs]
    i = 0
    while i < len(runs):
        if long[i]:
            i += 1
            continue
        j = i  # the chain of short runs i..j, each joined to the next
        while j + 1 < len(runs) and joined[j] and not long[j + 1]:
            j += 1
        left = runs[i - 1] if i > 0 and joined[i - 1] else None
        right = runs[j + 1] if j + 1 < len(runs) and joined[j] else None
        for a, b, _ in runs[i:j + 1]:
            middle = (a + b) / 2
            sides = [r for r in (left, right) if r is not None]
            if sides:
                nearest = min(sides, key=lambda r: (min(abs(middle - r[0]), abs(middle - r[1])), r[0] - r[1]))
                owner[a:b] = nearest[2]
        i = j + 1
    return owner


def _segments(owner: np.ndarray) -> list[dict]:
    """Runs of one speaker as segments; a pause under _MIN_GAP_S inside one speaker's speech does
    not end the segment. Speakers are named in order of first appearance."""
    step = _VAD_WINDOW / RATE
    names: dict[int, str] = {}
    segments: list[dict] = []
    last = None
    for a, b, k in _runs(owner):
        if k < 0:
            continue
        if last is not None and last[0] == k and (a - last[1]) * step < _MIN_GAP_S:
            segments[-1]["end"] = round(b * step, 2)
        else:
            label = names.setdefault(k, f"speaker {len(names) + 1}")
            segments.append({"start": round(a * step, 2), "end": round(b * step, 2), "speaker": label})
        last = (k, b)
    return segments


def diarize(call: Call, samples: np.ndarray, speakers: int, sr: int = RATE) -> dict:
    """{"segments": [{"start", "end", "speaker"}]}: who speaks when (seconds), silence left out,
    for a recording with `speakers` voices. Speakers are named "speaker 1", "speaker 2", ... in
    order of first appearance."""
    return turns(*listen(call, samples, sr), speakers)


def listen(call: Call, samples: np.ndarray, sr: int = RATE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """diarize's first half, the encoder's work: (16 kHz samples, window starts, window prints)."""
    wav = mono16k(samples, sr)
    # A recording shorter than one window is padded: it still gets one voice print.
    padded = np.pad(wav, (0, max(0, int(WINDOW_S * RATE) - wav.size)))
    starts, prints = call(VOICE_ENCODER, lambda enc: window_prints(enc, padded))
    return wav, starts, prints


def turns(wav: np.ndarray, starts: np.ndarray, prints: np.ndarray, speakers: int,
          vad_max_gain_db: float = VAD_MAX_GAIN_DB, **settings) -> dict:
    """diarize's second half: the VAD and the grouping, on what listen() gave (settings:
    segments_from's, so that bench quality measures each step)."""
    return {"segments": segments_from(starts, prints, speakers=int(speakers), **settings,
                                      **both_flags(wav, vad_max_gain_db))}


# ---------------------------------------------------------------------------------- long job

def _chunk_file(ctx: JobContext, index: int) -> Path:
    return ctx.work_dir / f"prints_{index:05d}.npz"


def diarize_job(ctx: JobContext) -> str:
    """Job kind diarize_long: params speakers, chunk_s; input 'media' (audio or video). Each chunk
    of CHUNK_S is embedded with the last 1.6 s of the one before (so windows run across chunk
    edges) and saved; the grouping runs once at the end. Result: diarization.json."""
    speakers = int(ctx.params.get("speakers", 2))
    path = ctx.input("media")
    info = probe_audio(path)
    chunk_s = float(ctx.params.get("chunk_s", CHUNK_S))
    chunk = int(round(chunk_s * RATE))
    done = int(ctx.checkpoint.get("chunks", 0))
    if ctx.checkpoint.get("prints") != PRINTS_FORMAT:
        done = 0   # chunks saved before the 0.8 s prints cannot join new ones: embed again
    if done:
        ctx.resumed_from(done * chunk / RATE, "s")
    keep = int(WINDOW_S * RATE)
    tail = np.zeros(0, np.float32)
    # The chunk before the first one to do supplies the overlap; it is decoded again, not stored.
    first = max(0, done - 1)
    for index, (_, samples) in enumerate(stream_audio(path, RATE, chunk_s, start_s=first * chunk_s), start=first):
        if index >= done:
            buffer = np.concatenate([tail, samples])
            offset = (index * chunk - len(tail)) // _MEL_HOP  # frame of buffer[0]
            # Windows that fitted in the previous chunk's buffer were embedded with it.
            min_start = offset + 1 if len(tail) else 0
            starts, prints = ctx.call(VOICE_ENCODER, lambda enc: window_prints(enc, buffer, offset, min_start))
            # Each chunk's VAD gain is its own: a quiet minute is raised as a quiet file is.
            save_arrays(_chunk_file(ctx, index), starts=starts, prints=prints, **both_flags(samples))
            ctx.save_checkpoint(chunks=index + 1, prints=PRINTS_FORMAT)
            if info.duration_s:
                ctx.progress(0.95 * min(1.0, (index + 1) * chunk_s / info.duration_s),
                             f"{(index + 1) * chunk_s:.0f} s listened to")
            ctx.check_cancelled()
        tail = np.concatenate([tail, samples])[-keep:]
    total = int(ctx.checkpoint.get("chunks", 0))
    if total == 0:
        raise UserFacingError("The audio could not be read: it is empty or corrupt.")
    parts = [np.load(_chunk_file(ctx, i)) for i in range(total)]
    found = {key: np.concatenate([p[key] for p in parts])
             for key in ("starts", "prints", "flags", "unraised")}
    if found["starts"].size == 0:  # shorter than one window: the short path handles that case
        raise UserFacingError("The recording is too short to tell speakers apart.")
    ctx.progress(0.97, "grouping voices")
    result = {"segments": segments_from(speakers=speakers, **found)}
    out = ctx.work_dir / "diarization.json"
    write_json(out, result, indent=1)
    return str(out)
