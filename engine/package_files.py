"""Weight files shipped inside installed wheels, found without importing those packages:
importing some of them pulls in torchvision, cv2 or Vulkan, and we only want their files."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Iterable


def package_folder(package: str, subdir: str, files: Iterable[str], missing: str) -> Path:
    """`subdir` of the installed `package`, holding every name in `files`.

    Raises FileNotFoundError with `missing` (what to install) when the package or a file is absent.
    """
    spec = importlib.util.find_spec(package)  # a top-level name: located, not executed
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(missing)
    folder = Path(list(spec.submodule_search_locations)[0]) / subdir
    absent = [name for name in files if not (folder / name).is_file()]
    if absent:
        raise FileNotFoundError(f"{missing} (missing in {folder}: {', '.join(absent)})")
    return folder


def reason_if_missing(check: Callable[[], object]) -> str | None:
    """The FileNotFoundError message of `check`, or None when it passes: a tab's 'why not'."""
    try:
        check()
    except FileNotFoundError as exc:
        return str(exc)
    return None
