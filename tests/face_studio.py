"""What the face studio's tests share (restore, swap, lip sync, portrait animation): a test graph
taken as a hub file's as a user's own file is, an engine as the app builds one with the face
detector (the job helpers they use are capability_engine's)."""
from __future__ import annotations

from analysers import face_detector
from store import hub_files
from tabs.catalog import build_engine


def bring(data, entry, graph):
    """The graph at `graph` taken by the store as entry's file, as the tab's upload does: licence
    accepted, and trusted (its sha256 is not one of the real file's)."""
    return hub_files.bring(entry, graph, data, accept_licence=True, trust_unlisted=True)


def engine_with(data, specs: list, job_kinds: list, chunk_frames: int):
    """The detector and a capability's specs and job kinds (told the data dir, so a missing file
    is refused at submit), running jobs, chunk_frames frames per chunk."""
    return build_engine(data_dir=data, specs=face_detector.specs() + specs, job_kinds=job_kinds,
                        store=False, start_jobs=True, chunk_frames=chunk_frames)
