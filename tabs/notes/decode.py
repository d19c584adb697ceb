"""Notes from Basic Pitch's three outputs: our port of basic_pitch 0.4.0's note_creation.py
(output_to_notes_polyphonic, get_infered_onsets, get_pitch_bends, drop_overlapping_pitch_bends),
numpy and scipy only (the package's module imports pretty_midi, mir_eval and resampy).

The outputs are per frame (86.13 a second) and per piano key: `note` (88 keys: is it sounding),
`onset` (88 keys: does it start here) and `contour` (264 bins, 3 a semitone: the pitch itself,
used for bends). A note starts at an onset peak and lasts while its key's note activation stays
above the frame threshold; the melodia trick then adds notes grown both ways from the strongest
activation that no note explains yet (the package's default, melodia_trick=True).

A note here is (start frame, end frame (exclusive), MIDI pitch, amplitude 0-1, bends or None),
bends one value per frame in thirds of a semitone, as the package has them.
"""
from __future__ import annotations

import numpy as np

# basic_pitch/note_creation.py
MIDI_OFFSET = 21        # key 0 is A0, MIDI 21
MAX_FREQ_IDX = 87       # the highest of the 88 keys
ENERGY_TOL = 11         # output_to_notes_polyphonic(energy_tol=11): frames under threshold that end a note
N_DIFF = 2              # get_infered_onsets(n_diff=2)
BEND_TOLERANCE = 25     # get_pitch_bends(n_bins_tolerance=25): contour bins either side of the key
BEND_STD = 5            # its gaussian weighting, std=5 bins
BINS_PER_SEMITONE = 3   # constants.CONTOURS_BINS_PER_SEMITONE
CONTOUR_BINS = 88 * BINS_PER_SEMITONE
# basic_pitch/inference.predict defaults
ONSET_THRESHOLD = 0.5
FRAME_THRESHOLD = 0.3
MIN_NOTE_MS = 127.70
FRAMES_PER_S = 22050 / 256  # predict(): min_note_len = round(ms / 1000 * AUDIO_SAMPLE_RATE / FFT_HOP)


def min_note_frames(ms: float) -> int:
    return int(np.round(ms / 1000 * FRAMES_PER_S))


def inferred_onsets(onsets: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """get_infered_onsets: onsets where a key's note activation rises sharply (the smaller of its
    rise over 1 and 2 frames), scaled to the onsets' maximum; the larger of the two per cell."""
    padded = np.concatenate([np.zeros((N_DIFF, frames.shape[1]), frames.dtype), frames])
    diff = np.min([padded[N_DIFF:] - padded[N_DIFF - n:-n] for n in range(1, N_DIFF + 1)], axis=0)
    diff[diff < 0] = 0
    diff[:N_DIFF] = 0
    top = diff.max(initial=0.0)
    if top > 0:   # the package divides by it; an activation that never rises (silence) adds nothing
        diff = onsets.max() * diff / top
    return np.maximum(onsets, diff)


def _walk(energy: np.ndarray, start: int, stop: int, step: int, key: int, threshold: float,
          clear: bool) -> tuple[int, int]:
    """From `start` towards `stop` (exclusive) by `step`, until ENERGY_TOL frames in a row are under
    the threshold: (the frame it stopped at, how many of the last frames were under). clear:
    zero the key and its neighbours on the way (the melodia trick's passes do)."""
    i, k = start, 0
    while (i < stop if step > 0 else i > stop) and k < ENERGY_TOL:
        k = k + 1 if energy[i, key] < threshold else 0
        if clear:
            energy[i, max(key - 1, 0):min(key + 2, MAX_FREQ_IDX + 1)] = 0
        i += step
    return i, k


def note_events(frames: np.ndarray, onsets: np.ndarray, onset_threshold: float = ONSET_THRESHOLD,
                frame_threshold: float = FRAME_THRESHOLD, min_frames: int = min_note_frames(MIN_NOTE_MS),
                melodia: bool = True) -> list[tuple[int, int, int, float]]:
    """output_to_notes_polyphonic (infer_onsets=True, no frequency limits): [(start, end, pitch,
    amplitude)] with frame indices; amplitude is the mean note activation over the note."""
    n_frames = frames.shape[0]
    if n_frames == 0:
        return []
    onsets = inferred_onsets(onsets, frames)
    peaks = np.zeros(onsets.shape, onsets.dtype)
    # scipy.signal.argrelmax(onsets, axis=0): strictly higher than the frames before and after.
    inner = (onsets[1:-1] > onsets[:-2]) & (onsets[1:-1] > onsets[2:])
    peaks[1:-1][inner] = onsets[1:-1][inner]
    times, keys = np.where(peaks >= onset_threshold)
    energy = frames.astype(np.float64)   # the package's remaining_energy
    notes = []
    for start, key in zip(times[::-1], keys[::-1]):   # backwards in time, as the package goes
        if start >= n_frames - 1:
            continue
        i, k = _walk(energy, start + 1, n_frames - 1, 1, key, frame_threshold, clear=False)
        end = i - k   # back to the last frame above the threshold
        if end - start <= min_frames:
            continue
        energy[start:end, max(key - 1, 0):min(key + 2, MAX_FREQ_IDX + 1)] = 0
        notes.append((int(start), int(end), int(key) + MIDI_OFFSET, float(np.mean(frames[start:end, key]))))
    while melodia and energy.max() > frame_threshold:
        middle, key = np.unravel_index(np.argmax(energy), energy.shape)
        energy[middle, key] = 0
        i, k = _walk(energy, middle + 1, n_frames - 1, 1, key, frame_threshold, clear=True)
        end = i - 1 - k
        i, k = _walk(energy, middle - 1, 0, -1, key, frame_threshold, clear=True)
        start = i + 1 + k
        if end - start <= min_frames:
            continue
        notes.append((int(start), int(end), int(key) + MIDI_OFFSET, float(np.mean(frames[start:end, key]))))
    return notes


def _gaussian(length: int, std: float) -> np.ndarray:
    """scipy.signal.windows.gaussian(length, std)."""
    n = np.arange(length) - (length - 1) / 2
    return np.exp(-0.5 * (n / std) ** 2)


GAUSSIAN = _gaussian(2 * BEND_TOLERANCE + 1, BEND_STD)


def pitch_bends(contour: np.ndarray, notes: list[tuple[int, int, int, float]]) -> list[tuple]:
    """get_pitch_bends: per note frame, the contour's peak (gaussian-weighted around the key) as
    an offset from the key in thirds of a semitone."""
    width = 2 * BEND_TOLERANCE + 1
    out = []
    for start, end, pitch, amplitude in notes:
        centre = BINS_PER_SEMITONE * (pitch - MIDI_OFFSET)  # midi_pitch_to_contour_bin, exactly
        low, high = max(centre - BEND_TOLERANCE, 0), min(CONTOUR_BINS, centre + BEND_TOLERANCE + 1)
        weights = GAUSSIAN[max(0, BEND_TOLERANCE - centre):width - max(0, centre - (CONTOUR_BINS - BEND_TOLERANCE - 1))]
        shift = BEND_TOLERANCE - max(0, BEND_TOLERANCE - centre)
        bends = np.argmax(contour[start:end, low:high] * weights, axis=1) - shift
        out.append((start, end, pitch, amplitude, [int(b) for b in bends]))
    return out


def drop_overlapping_bends(notes: list[tuple]) -> list[tuple]:
    """drop_overlapping_pitch_bends: MIDI bends a whole channel, so notes that overlap in time
    keep none (the package's default, multiple_pitch_bends=False). Sorted by start."""
    notes = sorted(notes, key=lambda n: n[:4])
    for i in range(len(notes) - 1):
        for j in range(i + 1, len(notes)):
            if notes[j][0] >= notes[i][1]:
                break
            notes[i] = notes[i][:4] + (None,)
            notes[j] = notes[j][:4] + (None,)
    return notes
