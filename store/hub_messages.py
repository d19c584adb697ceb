"""What a tab or a request says about the hub files a capability needs (store/hub_files.py): the
whole story for the tab (explain), and one short line for an error (short_problem, short_problems)."""
from __future__ import annotations

from .hub_files import status
from .manifest import HubFile


def explain(entry: HubFile, data_dir) -> str | None:
    """What a tab shows about the file (None: ready): how to get it while it is missing, else why
    the file in place cannot be used."""
    found = status(entry, data_dir)
    if found["ready"]:
        return None
    if not found["present"]:
        return found["how_to_get"]
    return (f"The file at {found['path']} cannot be used ({found['state']}). Get {entry.file} from "
            f"{' or '.join(entry.urls)}, or bring your copy again in the tab.")


def short_problem(entry: HubFile, data_dir, needs: str, section: str, apis: str) -> str | None:
    """The same as a one-line error for a request (None: ready), e.g. needs "Face swap", section
    "Get the model files", apis "swap_faces_download, swap_faces_bring"."""
    return short_problems([entry], data_dir, needs, section, apis)


def short_problems(entries, data_dir, needs: str, section: str, apis: str) -> str | None:
    """short_problem for a capability that needs several files: one sentence for all the missing
    ones (a request's error must stay short), one per file in place that cannot be used."""
    missing, broken = [], []
    for entry in entries:
        found = status(entry, data_dir)
        if found["ready"]:
            continue
        if found["present"]:
            broken.append(f"The {entry.file} in place cannot be used: {found['state']}.")
        else:
            missing.append(entry.file)
    if len(missing) == 1:
        broken.append(f"{needs} needs the file {missing[0]}, which is not here yet: download it or use your copy "
                      f"under \"{section}\" in its tab (API: {apis}).")
    elif missing:
        # Shorter than the one-file sentence: four file names must still fit a glance (300 characters).
        broken.append(f"{needs} needs {len(missing)} files not here yet ({', '.join(missing)}): get them "
                      f"under \"{section}\" in its tab (API: {apis}).")
    return " ".join(broken) or None
