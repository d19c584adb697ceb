"""Hub ONNX files by their manifest (store/manifest.py's HubFile, issue 20): fetched from the
entry's URLs or brought by the user, and kept at `local_path(data_dir, entry)` only once checked.

    status(entry, data_dir)            -> {present, path, sha256_listed, licence_accepted, how_to_get, ...}
    fetch(entry, data_dir, progress, accept_licence)   downloads (resumable), checks, puts it in place
    bring(entry, path, data_dir, accept_licence)       a file the user has (a path or an upload)
    require(entry, data_dir) -> Path   what a capability calls before loading: the checked file, or a
                                       plain error saying what is missing and how to get it

The checks, in order: the licence (a non-commercial one must be accepted, and the acceptance is
kept in hub_state), the sha256 (one of entry.sha256; a download that differs is deleted; a file
whose hash is not listed is taken only from bring(trust_unlisted=True) or, where the manifest
lists no hash at all, fetch(trust_unlisted=True), and only when its graph fits), then the graph's
inputs and outputs against the manifest (manifest.signature_problems, in plain sentences).
Downloads go to <data_dir>/hub-files/<name>/.partial/<file> and resume there with HTTP Range
(http.stream_to_part); the download_hub_file job (hub_job.py) runs fetch on the io lane.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from engine import format_bytes

from . import hub_state
from .errors import ChecksumMismatch, DownloadInterrupted, ModelStoreError, Offline, Refused
from .http import stream_to_part
from .manifest import HubFile, local_path, signature_problems
from .network import CONNECT_TIMEOUT_S, reachable
from .progress import Progress, Reporter
from .safetensors import sha256_file
from .hub_state import accept_licence as remember_licence, licence_accepted, licence_ok, licence_refusal

__all__ = ["fetch", "bring", "status", "require", "check_fetch", "how_to_get", "licence_accepted", "licence_ok",
           "remember_licence", "partial_path", "explain", "short_problem", "HubLoader"]

PARTIAL, BRINGING = ".partial", ".bringing"
_locks: dict[str, threading.Lock] = {}   # per local file: one fetch or bring at a time in this process
_locks_guard = threading.Lock()


def partial_path(data_dir, entry: HubFile) -> Path:
    """Where a download of entry grows (same name as the file, so the graph check's messages name it)."""
    return local_path(data_dir, entry).parent / PARTIAL / entry.file


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


# ---------------------------------------------------------------------------------- texts

def _hashes(entry: HubFile) -> str:
    if not entry.sha256:
        return "No sha256 of a good copy is known"
    return "Known good sha256: " + ", ".join(entry.sha256)


def _licence_line(entry: HubFile) -> str:
    if entry.commercial:
        return f"Licence: \"{entry.licence}\"."
    return f"Licence: \"{entry.licence}\": not for commercial use; accept it before it is downloaded or used."


def how_to_get(entry: HubFile, data_dir) -> str:
    """What a tab shows while the file is missing: where to get it, where it goes, its licence."""
    size = f", {format_bytes(entry.size)}" if entry.size else ""
    urls = "\n".join(f"- {url}" for url in entry.urls)
    return (f"**{entry.file}** ({entry.name}{size}) is not here yet. Download it with the tab's Download button "
            f"(a job: follow or cancel it in the Jobs tab; a cut download resumes), or get it yourself from\n{urls}\n\n"
            f"and put it at exactly `{local_path(data_dir, entry)}`, or upload it in the tab.\n\n"
            f"{_hashes(entry)}.\n\n{_licence_line(entry)}")


def offline_message(entry: HubFile, data_dir, why: dict[str, str]) -> str:
    tried = "; ".join(f"{url}: {reason}" for url, reason in why.items())
    return (f"Cannot download {entry.file}: no network here ({tried}). On a machine with internet download it "
            f"from {' or '.join(entry.urls)}, then put it at exactly {local_path(data_dir, entry)} (or upload it "
            f"in the tab). {_hashes(entry)}. {_licence_line(entry)}")


def _unlisted_message(entry: HubFile, name: str, sha: str, problems: list[str]) -> str:
    known = f"not one of the {len(entry.sha256)} known good copies of {entry.file}" if entry.sha256 else \
        f"unchecked: no sha256 of a good copy of {entry.file} is known"
    fits = (" Its inputs and outputs do not fit either: " + " ".join(problems)) if problems else \
        " Its inputs and outputs fit the manifest."
    return (f"{name}'s sha256 is {sha}: {known} (another version, or a damaged or altered file).{fits} A file "
            "whose sha256 is not listed is accepted only when you trust it (the tab's \"trust this file\" box, "
            "trust_unlisted=True) and its inputs and outputs fit.")


def _signature_message(entry: HubFile, problems: list[str]) -> str:
    return (" ".join(problems) + f" This is not the {entry.file} Wimmel expects ({entry.name}); get the file "
            "from the URLs the tab lists.")


# ---------------------------------------------------------------------------------- checks

def _licence(entry: HubFile, data_dir, accept: bool) -> None:
    if entry.commercial:
        return
    if accept:
        remember_licence(entry, data_dir)
    elif not licence_accepted(entry, data_dir):
        raise Refused(licence_refusal(entry))


def _trust_needed(entry: HubFile, trust_unlisted: bool) -> None:
    """A download can only be checked against a listed hash; with none listed the user must say so."""
    if not entry.sha256 and not trust_unlisted:
        raise ChecksumMismatch(
            f"No sha256 of a good copy of {entry.file} is known, so a download of it cannot be checked. Download "
            f"it only if you trust {' and '.join(entry.urls)}: tick \"trust this file\" (trust_unlisted=True); its "
            "inputs and outputs are still checked.")


def _verified(record: dict | None) -> bool:
    return bool(record) and not record["problems"] and (record["listed"] or record["trusted"])


def _check_in_place(entry: HubFile, data_dir, report: Reporter | None = None) -> dict | None:
    """The recorded check of the file at local_path, made now if the file is new (put there by hand)."""
    path = local_path(data_dir, entry)
    if not path.is_file():
        return None
    record = hub_state.checked(entry, data_dir, path)
    if record is None:
        step = report.counter(path.stat().st_size, "checking sha256") if report else None
        sha = sha256_file(path, step)
        record = hub_state.record_check(entry, data_dir, path, sha, signature_problems(path, entry), False,
                                        "found in place")
    return record


def check_fetch(entry: HubFile, data_dir, accept_licence: bool = False, trust_unlisted: bool = False,
                connect_timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """What can be decided before a download is queued (a second at most): the licence, the hash
    policy, and the network (some URL answers). True when the checked file is already here (nothing
    to download). Raises Refused, ChecksumMismatch or Offline with the plain message."""
    _licence(entry, data_dir, accept_licence)
    if _verified(hub_state.checked(entry, data_dir, local_path(data_dir, entry))):
        return True
    _trust_needed(entry, trust_unlisted)
    why = {}
    for url in entry.urls:
        why[url] = reachable(url, connect_timeout_s)
        if why[url] is None:
            return False
    raise Offline(offline_message(entry, data_dir, why))


# ---------------------------------------------------------------------------------- fetch

def fetch(entry: HubFile, data_dir, progress: Progress | None = None, accept_licence: bool = False, *,
          trust_unlisted: bool = False, cancelled: Callable[[], None] | None = None, retries: int = 2,
          connect_timeout_s: float = CONNECT_TIMEOUT_S) -> dict:
    """Download entry's file from its URLs in order (a partial download resumes, from the URL it came
    from first), check it and put it at local_path. progress(fraction, message); cancelled() raises
    to stop (the partial file stays for the next attempt). Returns status(entry, data_dir)."""
    _licence(entry, data_dir, accept_licence)
    report = Reporter(progress, cancelled)
    target = local_path(data_dir, entry)
    with _lock(target):
        if _verified(_check_in_place(entry, data_dir, report)):
            report(1.0, f"{entry.file} is already here", force=True)
            return status(entry, data_dir)
        _trust_needed(entry, trust_unlisted)
        part = partial_path(data_dir, entry)
        part.parent.mkdir(parents=True, exist_ok=True)
        meta = part.with_name(part.name + ".json")
        url, sha = _download(entry, data_dir, part, meta, report, retries, connect_timeout_s)
        listed = sha in entry.sha256
        if entry.sha256 and not listed:
            _discard(part, meta)
            raise ChecksumMismatch(f"{url}: the downloaded file's sha256 is {sha}, not one of the known good copies "
                                   f"of {entry.file} ({', '.join(entry.sha256)}); it was deleted. The URL now "
                                   "serves another file: get a good copy and bring it here.")
        report(1.0, "checking the graph's inputs and outputs", force=True)
        problems = signature_problems(part, entry)
        if problems:
            _discard(part, meta)
            raise Refused(_signature_message(entry, problems) + " The download was deleted.")
        os.replace(part, target)
        meta.unlink(missing_ok=True)
        hub_state.record_check(entry, data_dir, target, sha, [], not listed, url)
        report(1.0, f"{entry.file} downloaded and checked", force=True)
        return status(entry, data_dir)


def _download(entry: HubFile, data_dir, part: Path, meta: Path, report: Reporter, retries: int,
              connect_timeout_s: float) -> tuple[str, str]:
    """(url, sha256) of the first URL that gives the whole file into part."""
    import json

    started_from = None
    if part.exists() and meta.exists():
        try:
            started_from = json.loads(meta.read_text()).get("url")
        except ValueError:
            pass
    urls = sorted(entry.urls, key=lambda u: u != started_from)   # resume where the bytes came from
    why: dict[str, str] = {}
    offline = True
    for url in urls:
        reason = reachable(url, connect_timeout_s)
        if reason:
            why[url] = reason
            continue
        attempt = 0
        while True:
            try:
                _, sha = stream_to_part(url, part, meta, None, report, part.parent, check_names=False)
                return url, sha
            except DownloadInterrupted:
                attempt += 1
                if attempt > retries:
                    raise   # the part stays: the next fetch (or the job's retry) resumes it
            except Offline as exc:
                why[url] = str(exc)
                break
            except ModelStoreError as exc:   # the server answered, with an error (404...)
                why[url], offline = str(exc), False
                break
    if offline:
        raise Offline(offline_message(entry, data_dir, why))
    raise ModelStoreError(f"Could not download {entry.file}: " + " ".join(why.values()) + " Get it yourself and "
                          f"put it at exactly {local_path(data_dir, entry)}, or bring it here.")


def _discard(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- bring

def bring(entry: HubFile, path: str | os.PathLike, data_dir, accept_licence: bool = False, *,
          trust_unlisted: bool = False, progress: Progress | None = None,
          cancelled: Callable[[], None] | None = None) -> dict:
    """Take a file the user has (any path on this machine, or a Gradio upload's temporary path):
    linked (or copied) next to local_path, checked there, then put in place; the user's own file is
    never moved or deleted. Returns status(entry, data_dir), with `note` saying what was accepted."""
    source = Path(os.path.expanduser(str(path or "")))
    if not str(path or "").strip() or not source.is_file():
        raise ModelStoreError(f"{source}: no such file here. Give the path of {entry.file} on this machine, or "
                              "upload it.")
    _licence(entry, data_dir, accept_licence)
    report = Reporter(progress, cancelled)
    target = local_path(data_dir, entry)
    with _lock(target):
        in_place = target.exists() and source.resolve() == target.resolve()
        staged = target if in_place else target.parent / BRINGING / entry.file
        if not in_place:
            _stage(source, staged, report)
        try:
            sha = sha256_file(staged, report.counter(staged.stat().st_size, "checking sha256"))
            problems = signature_problems(staged, entry)
            listed = sha in entry.sha256
            if not listed and not (trust_unlisted and not problems):
                raise ChecksumMismatch(_unlisted_message(entry, source.name, sha, problems))
            if problems:
                raise Refused(_signature_message(entry, problems))
        except BaseException:
            if not in_place:
                _discard(staged)
            raise
        if not in_place:
            os.replace(staged, target)
        hub_state.record_check(entry, data_dir, target, sha, [], not listed, str(source))
    report(1.0, f"{entry.file} checked and in place", force=True)
    note = (f"{entry.file}: sha256 {sha} is a known good copy; its inputs and outputs fit." if listed else
            f"{entry.file}: sha256 {sha} is not among the known good copies; accepted because you trusted it "
            "and its inputs and outputs fit.")
    return dict(status(entry, data_dir), note=note)


def _stage(source: Path, staged: Path, report: Reporter) -> None:
    """A hard link where the file system allows it (no second copy of hundreds of MB), else a copy."""
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.unlink(missing_ok=True)
    try:
        os.link(source, staged)
        return
    except OSError:
        pass
    step = report.counter(source.stat().st_size, "copying")
    try:
        with open(source, "rb") as src, open(staged, "wb") as out:
            while block := src.read(4 * 1024**2):
                out.write(block)
                step(len(block))
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------- status

def status(entry: HubFile, data_dir, *, check: bool = True) -> dict:
    """What a tab shows: present or not, path, size, sha256 and whether it is listed, the licence and
    whether it was accepted, a partial download's bytes, `state` in a few words and `how_to_get`.
    check: hash a file found in place that was never checked (once: the result is kept)."""
    path = local_path(data_dir, entry)
    present = path.is_file()
    record = (_check_in_place(entry, data_dir) if check else hub_state.checked(entry, data_dir, path)) \
        if present else None
    part = partial_path(data_dir, entry)
    accepted = licence_accepted(entry, data_dir)
    allowed = entry.commercial or accepted
    if not present:
        state = "missing"
    elif record is None:
        state = "not checked yet"
    elif record["problems"]:
        state = "wrong file: " + " ".join(record["problems"])
    elif not (record["listed"] or record["trusted"]):
        state = "sha256 not listed: bring it again with \"trust this file\" to use it"
    elif not allowed:
        state = "licence not accepted"
    else:
        state = "ready"
    return {"name": entry.name, "file": entry.file, "present": present, "path": str(path),
            "size": path.stat().st_size if present else None, "expected_size": entry.size,
            "sha256": record["sha256"] if record else None,
            "sha256_listed": record["listed"] if record else None,
            "trusted": bool(record and record["trusted"]),
            "signature_problems": list(record["problems"]) if record else [],
            "licence": entry.licence, "commercial": entry.commercial, "licence_accepted": accepted,
            "licence_ok": allowed, "partial_bytes": part.stat().st_size if part.exists() else 0,
            "urls": list(entry.urls), "ready": state == "ready", "state": state,
            "how_to_get": how_to_get(entry, data_dir)}


class HubLoader:
    """A ModelSpec loader for a hub file: opens the checked file (require) with open(path, device)."""

    def __init__(self, entry: HubFile, data_dir, open: Callable[[Path, str], object]):
        self.entry, self.data_dir, self.open = entry, Path(data_dir), open

    @property
    def path(self) -> Path:
        return local_path(self.data_dir, self.entry)

    def __call__(self, device: str):
        return self.open(require(self.entry, self.data_dir), device)


def require(entry: HubFile, data_dir) -> Path:
    """The checked file, for a capability to load; else the plain error a tab shows (missing: how to
    get it; licence not accepted; a file put there by hand that does not check out)."""
    path = local_path(data_dir, entry)
    record = _check_in_place(entry, data_dir)
    if record is None:
        raise ModelStoreError(how_to_get(entry, data_dir))
    if not licence_ok(entry, data_dir):
        raise Refused(licence_refusal(entry))
    if not (record["listed"] or record["trusted"]):
        raise ChecksumMismatch(_unlisted_message(entry, path.name, record["sha256"], record["problems"]))
    if record["problems"]:
        raise Refused(_signature_message(entry, record["problems"]))
    return path
