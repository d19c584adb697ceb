"""Kinds of model the store registers. The store knows no model family: a capability that takes
user-added models declares its kind (tabs/<name>/__init__.py: STORE_KIND, recognises, ...), and
build_engine hands it to the store as a StoreKind. Two kinds are the store's own: "config" (a
repo's configs only, what a single-file checkpoint needs) and "other" (registered, used by none)."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelStoreError, Refused
from .safetensors import FP16_VARIANT, PICKLE_SUFFIXES

CONFIG = "config"
OTHER = "other"
CONFIG_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken")  # configs, tokenizers, vocabularies
CONFIG_FILES = ("model_index.json", "config.json")  # what a config-only folder has at its root

# files in the repo, the variant asked for, a reader of one of the repo's json files -> the files to
# fetch, or None when the repo is not of this kind.
RepoFiles = Callable[[list, "str | None", Callable[[str], dict]], "list[str] | None"]


@dataclass(frozen=True)
class StoreKind:
    """One kind of user-added model, as its capability declares it."""
    name: str                                 # "sam", "diffusion"
    recognises: Callable[[Path], bool]        # is this folder a model of this kind? (kind "auto")
    wants: str = ""                           # "<path> is not <wants>." when a folder is not of this kind
    one_file: bool = False                    # a single .safetensors file is a model of this kind
    repo_files: RepoFiles | None = None       # which files of a hub repo of this kind to fetch

    @classmethod
    def of(cls, capability) -> "StoreKind | None":
        """The kind a capability's contract declares (STORE_KIND), or None."""
        name = getattr(capability, "STORE_KIND", None)
        if not name:
            return None
        return cls(name, capability.recognises, getattr(capability, "STORE_WANTS", ""),
                   bool(getattr(capability, "STORE_ONE_FILE", False)),
                   getattr(capability, "store_repo_files", None))


def _root_files(files: list[str], variant: str | None) -> list[str]:
    """Root-level configs and safetensors (a sharded set keeps its index json), one variant."""
    configs = [f for f in files if "/" not in f and any(fnmatch.fnmatch(f, p) for p in CONFIG_PATTERNS)]
    root = [f for f in files if "/" not in f and f.endswith(".safetensors")]
    if variant:
        root = [f for f in root if f".{variant}." in f] or root
    else:
        root = [f for f in root if not FP16_VARIANT.search(f)] or root
    return sorted(set(configs + root))


class Kinds:
    """The kinds a store knows, in the order they were added (the order "auto" tries them)."""

    def __init__(self, kinds: list[StoreKind] = ()):
        self._kinds: dict[str, StoreKind] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: StoreKind) -> None:
        if kind.name in (CONFIG, OTHER, "auto"):
            raise ValueError(f"{kind.name!r} is the store's own kind")
        self._kinds[kind.name] = kind

    def names(self) -> list[str]:
        """Every kind a user may ask for, besides "auto"."""
        return [*self._kinds, CONFIG, OTHER]

    def normalise(self, kind: str | None) -> str:
        kind = (kind or "auto").strip().lower()
        if kind != "auto" and kind not in self.names():
            raise ModelStoreError(f"Unknown kind {kind!r}; use auto or one of {', '.join(self.names())}.")
        return kind

    def one_file_kind(self) -> str:
        """The kind a single .safetensors file is registered as."""
        return next((k.name for k in self._kinds.values() if k.one_file), OTHER)

    def check_one_file(self, kind: str, refusal: Callable[[str, str], str]) -> str:
        """The kind of a single file (kind "auto" resolved); refusal(single_file_kind, kind) says why
        a kind that is a folder cannot be one file."""
        single = self.one_file_kind()
        if kind == "auto":
            return single
        if kind not in (single, OTHER):
            raise ModelStoreError(refusal(single, kind))
        return kind

    def recognise(self, folder: Path) -> str:
        """The first kind whose capability recognises the folder, else "other"."""
        if folder.is_file():
            return self.one_file_kind()
        for kind in self._kinds.values():
            if kind.recognises(folder):
                return kind.name
        return OTHER

    def check_folder(self, path: Path, kind: str) -> str:
        """The folder has safetensors weights and is the kind of model it claims to be ("auto":
        what it is). Returns the kind."""
        if kind == CONFIG:
            if not any((path / name).exists() for name in CONFIG_FILES):
                raise ModelStoreError(f"{path} has neither {' nor '.join(CONFIG_FILES)}.")
            return kind
        weights = [p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                             p.relative_to(path).parts)]
        if not any(p.name.endswith(".safetensors") for p in weights):
            pickles = [p.name for p in weights if p.suffix.lower() in PICKLE_SUFFIXES]
            if pickles:
                raise Refused(f"{path} has only pickle weights ({', '.join(sorted(set(pickles))[:3])}), which can "
                              "run code when loaded: Wimmel loads folders with use_safetensors=True. Get the model's "
                              ".safetensors files.")
            raise ModelStoreError(f"{path} has no .safetensors weights.")
        if kind == "auto":
            return self.recognise(path)
        declared = self._kinds.get(kind)
        if declared is not None and not declared.recognises(path):
            raise ModelStoreError(f"{path} is not {declared.wants or f'a {kind} model'}.")
        return kind

    def repo_files(self, kind: str, files: list[str], variant: str | None,
                   read_json: Callable[[str], dict]) -> list[str]:
        """The files of a hub repo worth fetching: what the kind's capability chooses (kind "auto":
        the first that claims the repo), else the root-level configs and safetensors weights."""
        candidates = [self._kinds[kind]] if kind in self._kinds else (
            list(self._kinds.values()) if kind == "auto" else [])
        for candidate in candidates:
            if candidate.repo_files is not None:
                chosen = candidate.repo_files(files, variant, read_json)
                if chosen is not None:
                    return chosen
        return _root_files(files, variant)
