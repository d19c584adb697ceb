"""A single .safetensors file from any https URL: streamed into <data>/models/downloads/<slot>.part,
resumed with an HTTP Range request after a cut (If-Range on the ETag), sha256 checked when the user
gives one, and the bytes checked to be safetensors whatever the URL or server calls the file."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.parse
from pathlib import Path

from engine import format_bytes

from .errors import ChecksumMismatch, DownloadInterrupted, ModelStoreError, Offline, Refused
from .network import reachable
from .progress import Reporter
from .safetensors import NOT_SAFETENSORS, PICKLE_SUFFIXES, check_single_file_name, safetensors_header
from .sources import Source

log = logging.getLogger(__name__)


def url_file_name(url: str) -> str:
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name


def check_url_name(source: Source) -> None:
    """Refuse what the URL's name already tells; a name without a known suffix (an API download
    link) is decided by the downloaded bytes."""
    name = url_file_name(source.url)
    if Path(name).suffix.lower() in PICKLE_SUFFIXES + NOT_SAFETENSORS:
        check_single_file_name(name)


def offline_message(source: Source, why: str, downloads: Path) -> str:
    return (f"Cannot download {source.url}: {why}. Download that file on a machine with internet, "
            f"put it in {downloads} (or anywhere on this machine) and add the file's path here.")


def add_url(store, source: Source, name: str, kind: str, expected: str | None, report: Reporter,
            retries: int) -> dict:
    """The URL's file into `store` (the ModelStore)'s downloads folder; returns the entry to register.
    A cut download is resumed up to `retries` times here, and by the next add after that."""
    check_url_name(source)
    kind = store.kinds.check_one_file(kind, lambda single, kind: (
        f"A URL gives one .safetensors file, registered as a {single} checkpoint; a {kind} model comes from "
        "a hub id or a folder."))
    why = reachable(source.url, store.connect_timeout_s)
    if why:
        # A partial file is kept for when the network is back.
        raise Offline(offline_message(source, why, store.downloads))
    downloads = store.downloads
    downloads.mkdir(parents=True, exist_ok=True)
    slot = hashlib.sha1(source.url.encode()).hexdigest()[:10]
    part = downloads / f"{slot}.part"
    meta_path = part.with_suffix(".json")
    store.registry.note_pending(name, {"source": source.describe(), "type": "url", "part": str(part)})
    attempt = 0
    while True:
        try:
            final_name, sha = stream_to_part(source.url, part, meta_path, expected, report, downloads)
            break
        except DownloadInterrupted:
            attempt += 1
            if attempt > retries:
                raise
            log.warning("download of %s interrupted; resuming (%d of %d)", source.url, attempt, retries)
    final_name = Path(final_name or url_file_name(source.url) or slot).stem + ".safetensors"
    target = downloads / final_name
    if target.exists():
        target = downloads / f"{Path(final_name).stem}-{slot}.safetensors"
    try:
        safetensors_header(part)  # the bytes decide, whatever the name says
    except Refused:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        store.registry.forget_pending(name)
        raise
    os.replace(part, target)
    meta_path.unlink(missing_ok=True)
    return {"kind": kind, "source": source.describe(), "source_type": "url",
            "path": str(target), "bytes": target.stat().st_size, "sha256": sha, "owned": True}


def stream_to_part(url: str, part: Path, meta_path: Path, expected: str | None, report: Reporter,
                   downloads: Path, check_names: bool = True) -> tuple[str | None, str]:
    """Download url into part, resuming what is there; returns (file name from the server, sha256).
    check_names: refuse a server file name that is not safetensors (hub_files fetches .onnx)."""
    import httpx

    meta = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            meta = {}
    if meta.get("url") != url:
        part.unlink(missing_ok=True)
        meta = {"url": url}
    start = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if meta.get("etag") or meta.get("last_modified"):
            headers["If-Range"] = meta.get("etag") or meta["last_modified"]
    timeout = httpx.Timeout(10.0, read=60.0)
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
            if response.status_code == 416 and start:
                # Nothing left to send: the part may already be whole; its header check decides.
                total = _content_range_total(response.headers.get("Content-Range")) or start
                if total == start:
                    return meta.get("filename"), _hash_part(part, expected, report)
                part.unlink(missing_ok=True)
                raise DownloadInterrupted("the server refused to resume; starting again")
            if response.status_code not in (200, 206):
                raise ModelStoreError(f"{url}: the server answered {response.status_code} "
                                      f"{response.reason_phrase}.")
            disposition = _disposition_name(response.headers.get("Content-Disposition"))
            if check_names and disposition and \
                    Path(disposition).suffix.lower() in PICKLE_SUFFIXES + NOT_SAFETENSORS:
                check_single_file_name(disposition)
            meta.update(etag=response.headers.get("ETag"), last_modified=response.headers.get("Last-Modified"),
                        filename=disposition or meta.get("filename"))
            meta_path.write_text(json.dumps(meta))
            length = int(response.headers.get("Content-Length") or 0)
            if response.status_code == 206:
                total = _content_range_total(response.headers.get("Content-Range")) or start + length
                mode = "ab"
                _hash_existing(part, digest, report, total)
                log.info("resuming %s at %s of %s", url, format_bytes(start), format_bytes(total))
            else:
                start, total, mode = 0, length, "wb"
            done = start
            with open(part, mode) as out:
                for block in response.iter_bytes():  # as it arrives: a cut loses nothing received
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    report.bytes(done, total, "downloading")
            if total and done < total:
                raise DownloadInterrupted(f"the connection closed at {format_bytes(done)} of "
                                          f"{format_bytes(total)}; the next attempt resumes from there")
    except (httpx.TransportError, OSError) as exc:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) and not part.exists():
            raise Offline(f"Cannot reach {urllib.parse.urlparse(url).netloc}: {exc}. Download {url} with a "
                          f"browser and put the file in {downloads} (or anywhere), then add its path.") from exc
        have = part.stat().st_size if part.exists() else 0
        raise DownloadInterrupted(f"the download of {url} stopped at {format_bytes(have)} ({exc}); "
                                  "adding it again resumes from there") from exc
    sha = digest.hexdigest()
    report(1.0, "downloaded", force=True)
    if expected and sha != expected:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise ChecksumMismatch(f"{url}: the downloaded file's sha256 is {sha}, not the {expected} given; "
                               "it was deleted. Check the hash, or the URL points at another file.")
    return meta.get("filename"), sha


def _hash_existing(part: Path, digest, report: Reporter, total: int) -> None:
    step = report.counter(total, "checking the partial download")
    with open(part, "rb") as f:
        while block := f.read(4 * 1024**2):
            digest.update(block)
            step(len(block))


def _hash_part(part: Path, expected: str | None, report: Reporter) -> str:
    digest = hashlib.sha256()
    _hash_existing(part, digest, report, part.stat().st_size)
    sha = digest.hexdigest()
    if expected and sha != expected:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(f"the downloaded file's sha256 is {sha}, not the {expected} given; it was deleted.")
    return sha


def _disposition_name(header: str | None) -> str | None:
    if not header:
        return None
    match = re.search(r"filename\*\s*=\s*[^']*''([^;]+)", header) or re.search(r'filename\s*=\s*"?([^";]+)"?', header)
    return Path(urllib.parse.unquote(match.group(1).strip())).name if match else None


def _content_range_total(header: str | None) -> int | None:
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None
