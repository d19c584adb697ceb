"""Texts the app has made: transcripts (speech to text) and on-screen text (OCR of a video), read
from disk by their documented formats, so that the text capabilities (search, language, entities)
can take them as input without importing the capabilities that made them.

- finished jobs whose result is an SRT file (engine/jobs.py's table, `result` column): speech to
  text's transcribe_long leaves transcript.json beside its transcript.srt (tabs/stt/long_input.py,
  job_outputs), whose segments are whole utterances with times; any other SRT result (read text's
  ocr_video) is read cue by cue;
- interactive transcriptions, whose files stay a few hours in the outputs folder
  (ui/outputs.py: <ROOT>/stt/<request>/transcript.json).
"""
from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

_SRT_TIME = re.compile(r"(\d+):(\d{2}):(\d{2})[,.](\d{3})\s*-->\s*(\d+):(\d{2}):(\d{2})[,.](\d{3})")


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse_srt(body: str) -> list[dict]:
    """Cues of an SRT text: [{"start", "end", "text"}], text lines joined by a space."""
    cues = []
    for block in re.split(r"\r?\n\s*\r?\n", body.replace("\ufeff", "")):
        lines = [line for line in block.strip().splitlines() if line.strip()]
        for i, line in enumerate(lines[:2]):   # the number line is optional in the wild
            found = _SRT_TIME.search(line)
            if found:
                h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, found.groups())
                text = clean(" ".join(lines[i + 1:]))
                if text:
                    cues.append({"start": h1 * 3600 + m1 * 60 + s1 + ms1 / 1000,
                                 "end": h2 * 3600 + m2 * 60 + s2 + ms2 / 1000, "text": text})
                break
    return cues


def transcript_segments(path: Path) -> list[dict] | None:
    """The segments of a speech-to-text transcript.json, or None if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    segments = data.get("segments") if isinstance(data, dict) else None
    if not isinstance(segments, list):
        return None
    return [s for s in segments if isinstance(s, dict) and {"start", "end", "text"} <= set(s)]


# What a hit in a job's result is called, by job kind (the names other capabilities register;
# strings, not imports). A kind not named here that leaves an SRT is read as subtitles.
JOB_WORDS = {"transcribe_long": "recording", "ocr_video": "video text"}
SPEECH_JOBS = ("transcribe_long",)


def job_source(job: dict) -> dict | None:
    """A finished job whose result is an SRT file, as a source (without passages yet): its id,
    a label naming the job's input file, the file to read; None for any other job."""
    result = Path(job.get("result") or "")
    if job.get("state") != "done" or result.suffix.lower() != ".srt" or not result.is_file():
        return None
    inputs = (job.get("params") or {}).get("inputs") or {}
    name = Path(next(iter(inputs.values()), "") or result.name).name
    transcript = result.with_name("transcript.json")
    speech = transcript.is_file() or job.get("capability") in SPEECH_JOBS
    what = JOB_WORDS.get(job.get("capability"), "subtitles of")
    return {"id": f"job:{job['id']}", "kind": "speech" if speech else "subtitles",
            "label": f"{what} {name} (job {job['id']})",
            "files": [transcript if transcript.is_file() else result]}


def request_sources(outputs_root: Path) -> list[dict]:
    """Interactive transcriptions still in the outputs folder (ui/outputs.py sweeps them after a
    few hours; what was indexed stays in the index)."""
    found = []
    for path in sorted(Path(outputs_root).glob("stt/*/transcript.json")):
        try:
            made = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        except OSError:
            continue   # swept meanwhile
        found.append({"id": f"request:{path.parent.name}", "kind": "speech",
                      "label": f"transcription of {made}", "files": [path]})
    return found


def finished_texts(jobs: list[dict], outputs_root: Path) -> list[dict]:
    """Every text source there is now: finished jobs in the order given (the job table lists the
    newest first), then transcriptions."""
    return [s for s in map(job_source, jobs) if s] + request_sources(outputs_root)


def source_text(source: dict) -> str:
    """The plain text of a source: a transcript's utterances or an SRT's cues, one per line."""
    path = Path(source["files"][0])
    if path.name == "transcript.json":
        return "\n".join(clean(s["text"]) for s in transcript_segments(path) or [] if clean(s["text"]))
    return "\n".join(cue["text"] for cue in parse_srt(path.read_text(encoding="utf-8", errors="replace")))
