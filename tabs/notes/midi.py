"""A Standard MIDI File of transcribed notes, written by our own few lines: no MIDI library is
installed (basic_pitch uses pretty_midi, which pulls in mido), and a file of notes and pitch bends
on one channel needs only the SMF basics (format 1, a tempo track and a note track).

What goes in follows basic_pitch's note_events_to_midi: tempo 120, one "Electric Piano 1"
(program 4) instrument, velocity round(127 * amplitude), bends of notes that overlap none, in
thirds of a semitone scaled by 4096 / 3 (a bend range of 2 semitones, clipped to -8192..8191).
Two differences, both so the file plays as the notes sound: each bend sits at its own frame's
time (the package spreads them over [start, end], one frame too wide), and a bent note's end
resets the bend to 0 (otherwise the next note would play bent).
"""
from __future__ import annotations

import struct
from pathlib import Path

from engine.files import atomic_write

TICKS_PER_BEAT = 480
TEMPO_US = 500_000            # 120 beats a minute (note_events_to_midi(midi_tempo=120))
TICKS_PER_S = TICKS_PER_BEAT * 1_000_000 / TEMPO_US
PROGRAM = 4                   # pretty_midi.instrument_name_to_program("Electric Piano 1")
BEND_TICKS = 4096 / 3         # one bin (a third of a semitone) with a 2-semitone bend range
# At one tick, in this order: a note ends, a bend is reset or set, a note starts.
OFF, BEND, ON = 0, 1, 2


def _varlen(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits a byte, the high bit set on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _track(events: list[tuple[int, int, int, bytes]]) -> bytes:
    """MTrk chunk of (tick, order, sequence, message) events, with delta times and an end mark."""
    body, now = bytearray(), 0
    for tick, _, _, message in sorted(events):
        body += _varlen(tick - now) + message
        now = tick
    body += b"\x00\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


def _tick(seconds: float) -> int:
    return int(round(seconds * TICKS_PER_S))


def _bend_message(thirds: int) -> bytes:
    value = max(-8192, min(8191, int(round(thirds * BEND_TICKS)))) + 8192
    return bytes([0xE0, value & 0x7F, value >> 7])


def midi_bytes(notes: list[dict], frame_s: float) -> bytes:
    """notes: {"start", "end" (s), "pitch", "velocity" (1-127), optional "bends" (thirds of a
    semitone, one a frame from the start, frame_s apart)}."""
    events: list[tuple[int, int, int, bytes]] = [(0, BEND, 0, bytes([0xC0, PROGRAM]))]
    for seq, note in enumerate(notes, 1):
        start, end = _tick(note["start"]), max(_tick(note["end"]), _tick(note["start"]) + 1)
        events.append((start, ON, seq, bytes([0x90, note["pitch"], note["velocity"]])))
        events.append((end, OFF, seq, bytes([0x80, note["pitch"], 0])))
        bends, last = note.get("bends") or [], 0
        for i, thirds in enumerate(bends):
            if thirds != last:   # only changes: a held bend needs no repeat
                events.append((min(_tick(note["start"] + i * frame_s), end), BEND, seq, _bend_message(thirds)))
                last = thirds
        if last:
            events.append((end, BEND, seq, _bend_message(0)))
    tempo_track = _track([(0, 0, 0, b"\xff\x51\x03" + TEMPO_US.to_bytes(3, "big"))])
    header = b"MThd" + struct.pack(">IHHH", 6, 1, 2, TICKS_PER_BEAT)
    return header + tempo_track + _track(events)


def write_midi(path, notes: list[dict], frame_s: float) -> Path:
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_bytes(midi_bytes(notes, frame_s))
    return path
