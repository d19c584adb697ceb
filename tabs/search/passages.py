"""What gets indexed: texts cut into passages, each with where it came from.

Sources (ui/texts.py reads them from disk by their documented formats; no other capability is
imported):
- finished jobs whose result is an SRT file (engine/jobs.py's table, `result` column): speech to
  text's transcribe_long leaves transcript.json beside its transcript.srt (tabs/stt/long_input.py,
  job_outputs), whose segments are whole utterances with times; any other SRT result (read text's
  ocr_video) is read cue by cue;
- interactive transcriptions, whose files stay a few hours in the outputs folder
  (ui/outputs.py: <ROOT>/stt/<request>/transcript.json);
- texts a user adds: pasted, or a .txt, .md or .srt file.

A passage: {"text", "start", "end"} (seconds, or None for untimed text).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ui.texts import clean, job_source, parse_srt, request_sources, transcript_segments  # noqa: F401

# The model was fine-tuned on 128 word pieces; about 80 words stay under that. A timed passage
# closes once it holds MIN_WORDS and a sentence ends, so a hit's time points near what was said.
MAX_WORDS = 80
MIN_WORDS = 20
PAUSE_S = 3.0   # a silence (or a gap between cues) this long also ends a passage
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*$")
TEXT_SUFFIXES = (".txt", ".md", ".srt")


def text_hash(text: str) -> str:
    """The key of a passage's embedding: the exact text the model sees."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def clock(seconds: float) -> str:
    """01:23 (or 1:02:03 past an hour): the time a hit points to."""
    whole = int(seconds)
    hours, minutes, secs = whole // 3600, whole // 60 % 60, whole % 60
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


# ------------------------------------------------------------------------------ parsing

def timed_passages(units: list[dict], min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[dict]:
    """Consecutive timed units (segments, cues) joined into passages: one closes at a sentence end
    once it holds `min_words`, before it would pass `max_words`, and at a pause of PAUSE_S."""
    passages, current, count = [], [], 0
    for unit in units:
        text, words = clean(unit["text"]), len(unit["text"].split())
        if not text:
            continue
        if current and (count + words > max_words or float(unit["start"]) - current[-1]["end"] >= PAUSE_S):
            passages.append(_join(current))
            current, count = [], 0
        current.append({**unit, "text": text})
        count += words
        if count >= min_words and _SENTENCE_END.search(text):
            passages.append(_join(current))
            current, count = [], 0
    if current:
        passages.append(_join(current))
    return passages


def _join(units: list[dict]) -> dict:
    return {"text": " ".join(u["text"] for u in units), "start": float(units[0]["start"]),
            "end": float(units[-1]["end"])}


def text_passages(text: str, max_words: int = MAX_WORDS) -> list[dict]:
    """Untimed text: a passage per paragraph (blank lines, or Markdown headings, part them);
    a paragraph over `max_words` is cut between sentences."""
    passages = []
    for paragraph in re.split(r"\n\s*\n|\n(?=#)", text.replace("\r\n", "\n")):
        # A heading leads the paragraph under it ("Recipe: Preheat the oven..."): alone it says
        # little, and it tells the paragraph's topic.
        heading = re.match(r"#+[ \t]*(.*)", paragraph.strip())
        if heading:
            rest = paragraph.strip()[heading.end():]
            paragraph = heading.group(1).strip().rstrip(":") + (": " + rest if rest.strip() else "")
        paragraph = clean(paragraph)
        if not paragraph:
            continue
        sentences = re.split(r"(?<=[.!?…])\s+", paragraph)
        current: list[str] = []
        for sentence in sentences:
            words = sentence.split()
            while len(words) > max_words:   # one run-on "sentence" past the limit: cut by words
                if current:
                    passages.append(" ".join(current))
                    current = []
                passages.append(" ".join(words[:max_words]))
                words = words[max_words:]
            if current and len(" ".join(current).split()) + len(words) > max_words:
                passages.append(" ".join(current))
                current = []
            if words:
                current.append(" ".join(words))
        if current:
            passages.append(" ".join(current))
    return [{"text": p, "start": None, "end": None} for p in passages]


def file_passages(name: str, body: str) -> list[dict]:
    """A user's file: an .srt by its cues (timed), anything else as plain text."""
    if name.lower().endswith(".srt"):
        return timed_passages(parse_srt(body))
    return text_passages(body)


# ------------------------------------------------------------------------------ sources

def stamp(*paths: Path) -> list:
    """What tells a changed file from the one indexed: size and modification time of each."""
    return [[p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def read_passages(source: dict) -> list[dict]:
    """The passages of a job or request source, from its file: a transcript's segments, or an
    SRT's cues (joined into sentences for speech; each cue of on-screen text is what one slide or
    caption showed, a passage of its own)."""
    path = source["files"][0]
    if path.name == "transcript.json":
        return timed_passages(transcript_segments(path) or [])
    cues = parse_srt(path.read_text(encoding="utf-8", errors="replace"))
    return timed_passages(cues) if source["kind"] == "speech" else [_join([cue]) for cue in cues]
