"""What the user typed, parsed: a hub id, a hub URL (a repo or one file of it), any other URL, or
a folder or file on this machine."""
from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from .errors import ModelStoreError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_HUB_HOSTS = ("huggingface.co", "hf.co", "www.huggingface.co")
NO_SOURCE = ("Give a source: a hub id (org/name), the URL of a .safetensors file, or a folder or file on "
             "this machine.")


class Source:
    """A parsed source: type 'hub' (repo), 'hub_file' (one file of a repo), 'url', 'folder', 'file'."""

    def __init__(self, type: str, text: str, *, repo: str | None = None, revision: str | None = None,
                 filename: str | None = None, url: str | None = None, path: Path | None = None):
        self.type, self.text, self.repo, self.revision = type, text, repo, revision
        self.filename, self.url, self.path = filename, url, path

    @property
    def remote(self) -> bool:
        return self.type in ("hub", "hub_file", "url")

    def default_name(self) -> str:
        if self.type == "hub":
            return self.repo + (f"@{self.revision}" if self.revision else "")
        if self.type == "hub_file":
            return f"{self.repo}/{Path(self.filename).stem}"
        if self.type == "url":
            return Path(urllib.parse.unquote(urllib.parse.urlparse(self.url).path)).stem or "model"
        return self.path.stem if self.type == "file" else self.path.name

    def describe(self) -> str:
        if self.type == "hub":
            return self.repo + (f"@{self.revision}" if self.revision else "")
        if self.type == "hub_file":
            return f"{self.repo}/{self.filename}" + (f"@{self.revision}" if self.revision else "")
        return self.url or str(self.path)


def _hub_hosts(endpoint: str | None) -> tuple[str, ...]:
    hosts = list(_HUB_HOSTS)
    if endpoint:
        hosts.append(urllib.parse.urlparse(endpoint).netloc)
    return tuple(hosts)


def parse_source(text: str, revision: str | None = None, endpoint: str | None = None) -> Source:
    """What the user typed: a hub id, a URL, or a path on this machine."""
    text = (text or "").strip().strip('"').strip("'")
    if not text:
        raise ModelStoreError(NO_SOURCE)
    if text.startswith(("http://", "https://")):
        url = urllib.parse.urlparse(text)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        if url.netloc in _hub_hosts(endpoint) and parts and parts[0] not in ("datasets", "spaces"):
            for marker in ("resolve", "blob"):
                if marker in parts[2:3] and len(parts) >= 5:
                    return Source("hub_file", text, repo="/".join(parts[:2]), revision=revision or parts[3],
                                  filename="/".join(parts[4:]))
            if len(parts) == 2 or (len(parts) >= 4 and parts[2] == "tree"):
                rev = revision or (parts[3] if len(parts) >= 4 else None)
                return Source("hub", text, repo="/".join(parts[:2]), revision=rev)
            raise ModelStoreError(f"{text} is a hub page, not a model: give the model's id (org/name) or the "
                                  "'resolve' URL of one .safetensors file.")
        return Source("url", text, url=text)
    if text.startswith("hf://"):
        text = text[len("hf://"):]
    path = Path(os.path.expanduser(text))
    if path.exists():
        return Source("folder" if path.is_dir() else "file", text, path=path.resolve())
    repo, _, rev = text.partition("@")
    if _HUB_ID.match(repo) and not text.startswith((".", "/", "~")):
        return Source("hub", text, repo=repo, revision=revision or rev or None)
    raise ModelStoreError(f"{text}: no such folder or file here, and not a hub id (org/name).")
