"""Models: add the models users bring (a hub id, the URL of a .safetensors file, a local folder or
file), see what is registered and what it takes on disk, remove. Added models show up in the
Generate (kind diffusion) and Segment (kind sam) tabs."""
from __future__ import annotations

import datetime as dt
import json
import threading
import weakref

import gradio as gr
import pandas as pd

from ui.jobs import follow_job
from engine import Engine, format_bytes
from engine import model_store as ms

KINDS = ["auto", "diffusion", "sam", "config", "other"]
FILES = {"weights and configs (safetensors only)": None,
         "configs only (*.json, *.txt: what a single-file checkpoint needs)": list(ms.CONFIG_PATTERNS)}
COLUMNS = ["name", "kind", "size", "on disk", "source", "path", "added", "sha256", "status"]

INTRO = """Add a model by **hub id** (`stabilityai/sd-turbo`, `facebook/sam-vit-base`, `org/name@revision`),
by the **URL of one `.safetensors` checkpoint** (a hub `.../resolve/main/...` link or any https link), or by a
**folder or file on this machine**. Downloads run as jobs (see the Jobs tab): they survive a closed browser, and
an interrupted one resumes where it stopped. Only safetensors are fetched or loaded; pickle checkpoints
(`.ckpt`, `.bin`, `.pt`) are refused. Kind **auto** reads it from the files (`model_index.json`: diffusion,
a SAM `config.json`: sam, one `.safetensors` file: diffusion)."""



# ---------------------------------------------------------------------------------- engine wiring

def _register_diffusion(engine: Engine, entry: dict) -> None:
    from tabs.generate import pipeline as dz

    if entry["name"] in engine.registry:
        spec = engine.registry.get(entry["name"])
        if dz.is_diffusion(spec) and spec.loader.model.path == entry["path"]:
            return  # already there (a second connect, or the same entry announced again)
        raise ValueError(f"the engine already has a model named {entry['name']!r}; "
                         "remove the store entry and add it under another name")
    dz.register(engine, dz.DiffusionModel(name=entry["name"], path=entry["path"], config=entry.get("config"),
                                          description=f"Stable Diffusion family, from {entry['source']}"))


def _unregister(engine: Engine, entry: dict) -> None:
    engine.unregister(entry["name"])


_CONNECTED: "weakref.WeakSet" = weakref.WeakSet()
_LOCK = threading.Lock()


def connect(engine: Engine) -> ms.ModelStore:
    """The engine's model store, with every stored diffusion and SAM model registered as an engine
    model (now and as models are added) and the download_model job kind on the queue. Idempotent;
    call it at start-up before the tabs are built and before engine.jobs.start()."""
    from tabs.segment import model as sam

    store = ms.attach(engine)
    sam.connect(engine)
    with _LOCK:
        if engine in _CONNECTED:
            return store
        _CONNECTED.add(engine)
    store.connect("diffusion", lambda entry: _register_diffusion(engine, entry),
                  lambda entry: _unregister(engine, entry))
    return store


# ---------------------------------------------------------------------------------- views

def _time(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""


def _sha(entry: dict) -> str:
    sha = entry.get("sha256")
    if isinstance(sha, dict):
        return f"{len(sha)} files checked" if sha else ""
    return f"{sha[:12]}…" if sha else ""


def rows(store: ms.ModelStore) -> pd.DataFrame:
    out = []
    for e in store.list():
        status = "missing: add it again" if not e["exists"] else (f"not usable: {e['problem']}" if e.get("problem")
                                                                   else "ready")
        out.append({"name": e["name"], "kind": e["kind"], "size": format_bytes(e["bytes"]),
                    "on disk": "downloaded (remove deletes it)" if e.get("owned") else "yours (kept on remove)",
                    "source": e["source"], "path": e["path"], "added": _time(e.get("added")), "sha256": _sha(e),
                    "status": status})
    for p in store.pending():
        out.append({"name": p["name"], "kind": "", "size": "", "on disk": "partial download", "source": p["source"],
                    "path": p.get("part", ""), "added": _time(p.get("started")), "sha256": "",
                    "status": "downloading, or interrupted: add it again to resume"})
    return pd.DataFrame(out, columns=COLUMNS)


def usage_text(store: ms.ModelStore) -> str:
    d = store.disk_usage()
    free = format_bytes(d["free_bytes"]) if d["free_bytes"] is not None else "?"
    partial = f", {format_bytes(d['partial_bytes'])} in partial downloads" if d["partial_bytes"] else ""
    count = f"{d['models']} model" + ("" if d["models"] == 1 else "s")
    return (f"**{count}, {format_bytes(d['total_bytes'])}**: {format_bytes(d['downloaded_bytes'])} "
            f"downloaded here, {format_bytes(d['local_bytes'])} in your own folders{partial}. "
            f"{free} free in the hub cache `{d['cache_dir']}` (set by HF_HOME); single-file downloads go to "
            f"`{d['downloads_dir']}`.")


def _public(entry: dict) -> dict:
    """An entry for the API. Its folder is `local_path`: gradio_client takes any JSON object with a
    "path" string for a file to download, and would try to fetch the model folder."""
    keep = ("name", "kind", "source", "source_type", "path", "bytes", "sha256", "added", "owned", "revision",
            "exists", "problem", "config", "freed_bytes")
    return {("local_path" if k == "path" else k): entry[k] for k in keep if k in entry}


def build(engine: Engine) -> None:
    store = connect(engine)

    def add_model(source: str, kind: str = "auto", sha256: str = "", name: str = "", revision: str = "",
                  files: str | None = None, progress=gr.Progress()) -> dict:
        """Add a model to the store: download it (as a job, with resume) or register it where it is.

        Args:
            source: a hub id ("facebook/sam-vit-base", "org/name@revision"), the URL of one .safetensors file
                (a hub ".../resolve/..." link or any https link), or a folder or .safetensors file on this machine.
            kind: "auto" (from the files), "diffusion" (Stable Diffusion 1.x/2.x/XL, folder or single file),
                "sam" (Segment Anything), "config" (a repo's .json/.txt only) or "other".
            sha256: optional: the expected sha256 of a single file; a mismatch refuses the file.
            name: optional: the name to list it under (default: from the source).
            revision: optional: a hub branch, tag or commit.
            files: optional: hub repos only; "configs only" fetches just the .json/.txt files (what a single-file
                checkpoint needs), anything else the safetensors weights and configs.

        Returns:
            The registered model: name, kind, source, local_path, bytes, sha256 (where known), added (unix time).
        """
        patterns = list(ms.CONFIG_PATTERNS) if files and "config" in files.lower() and "weights" not in files.lower() \
            else None
        kind = "config" if patterns and (kind or "auto") == "auto" else (kind or "auto")
        try:
            # Fast: parse, name, network (a sub-second check), local validity. Offline fails here.
            check = store.check(source, kind, name=name or None, revision=revision or None)
        except ms.ModelStoreError as exc:
            raise gr.Error(str(exc), duration=None) from exc
        options = {"kind": kind, "name": check["name"], "revision": revision or None, "sha256": sha256 or None,
                   "allow_patterns": patterns}
        if not check["remote"] or check["cached"]:
            try:
                entry = store.add(source, progress=lambda f, m: progress(f, desc=m), **options)
            except ms.ModelStoreError as exc:
                raise gr.Error(str(exc), duration=None) from exc
            return _public(entry)
        job_id = engine.jobs.submit(ms.JOB_CAPABILITY, {"source": source, **options})
        result = follow_job(engine, job_id, progress)
        with open(result) as f:
            return _public(json.load(f))

    def list_models() -> list[dict]:
        """Every registered model: name, kind (diffusion, sam, config, other), source, local_path, bytes on disk,
        sha256 where known, added (unix time), owned (true: downloaded here, deleted on remove), exists."""
        return [_public(e) for e in store.list()]

    def remove_model(name: str) -> dict:
        """Remove a model from the store. Files downloaded here are deleted; your own folders and files never.

        Args:
            name: the model's name, as list_models gives it.
        """
        if not name:
            raise gr.Error("Choose a model to remove.")
        try:
            return _public(store.remove(name))
        except KeyError:
            raise gr.Error(f"There is no model {name!r}.") from None

    def render():
        names = [e["name"] for e in store.list()] + [p["name"] for p in store.pending()]
        return rows(store), usage_text(store), gr.update(choices=names, value=None)

    gr.Markdown(INTRO)
    with gr.Row():
        source = gr.Textbox(label="Source", placeholder="facebook/sam-vit-base  ·  https://…/model.safetensors  ·  "
                                                        "/path/to/folder", scale=4)
        kind = gr.Dropdown(KINDS, value="auto", label="Kind", scale=1)
    with gr.Accordion("Options", open=False):
        with gr.Row():
            name = gr.Textbox(label="Name (default: from the source)")
            revision = gr.Textbox(label="Hub revision (branch, tag or commit)")
            sha256 = gr.Textbox(label="sha256 of a single file (optional: checked)")
        files = gr.Radio(list(FILES), value=list(FILES)[0], label="Hub files")
    add = gr.Button("Add", variant="primary")
    added = gr.JSON(label="Added")
    gr.Markdown("### Registered models")
    usage = gr.Markdown(lambda: usage_text(store))
    table = gr.Dataframe(lambda: rows(store), label="Models", interactive=False, wrap=True)
    with gr.Row():
        pick = gr.Dropdown(label="Model", choices=[e["name"] for e in store.list()], scale=3)
        remove = gr.Button("Remove", variant="stop", scale=1)
        refresh = gr.Button("Refresh", scale=1)
    removed = gr.JSON(label="Removed", visible=False)
    listing = gr.JSON(visible=False)

    add.click(add_model, [source, kind, sha256, name, revision, files], added, api_name="add_model",
              concurrency_limit=None).then(render, None, [table, usage, pick], api_visibility="private",
                                           show_progress="hidden")
    remove.click(remove_model, pick, removed, api_name="remove_model").then(
        render, None, [table, usage, pick], api_visibility="private", show_progress="hidden")
    refresh.click(list_models, None, listing, api_name="list_models").then(
        render, None, [table, usage, pick], api_visibility="private", show_progress="hidden")
