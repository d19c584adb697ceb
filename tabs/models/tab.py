"""Models: add the models users bring (a hub id, the URL of a .safetensors file, a local folder or
file), see what is registered and what it takes on disk, remove. Added models show up in the
Generate (kind diffusion) and Segment (kind sam) tabs."""
from __future__ import annotations

import json

import gradio as gr
import pandas as pd

import store as model_store
import tabs.models as capability
from engine import Engine, UserFacingError, format_bytes
from store import CONFIG_PATTERNS, JOB_CAPABILITY, ModelStore
from ui.handlers import handler
from ui.times import DATE_AND_MINUTE, local_time
from ui.jobs import start_job

FILES = {"weights and configs (safetensors only)": None,
         "configs only (*.json, *.txt: what a single-file checkpoint needs)": list(CONFIG_PATTERNS)}
COLUMNS = ["name", "kind", "size", "on disk", "source", "path", "added", "sha256", "status"]

INTRO = """Add a model by **hub id** (`stabilityai/sd-turbo`, `facebook/sam-vit-base`, `org/name@revision`),
by the **URL of one `.safetensors` checkpoint** (a hub `.../resolve/main/...` link or any https link), or by a
**folder or file on this machine**. Downloads run as jobs (see the Jobs tab): they survive a closed browser, and
an interrupted one resumes where it stopped. Only safetensors are fetched or loaded; pickle checkpoints
(`.ckpt`, `.bin`, `.pt`) are refused. Kind **auto** reads it from the files (`model_index.json`: diffusion,
a SAM `config.json`: sam, one `.safetensors` file: diffusion)."""


# ---------------------------------------------------------------------------------- views

def _sha(entry: dict) -> str:
    sha = entry.get("sha256")
    if isinstance(sha, dict):
        return f"{len(sha)} files checked" if sha else ""
    return f"{sha[:12]}…" if sha else ""


def rows(store: ModelStore) -> pd.DataFrame:
    out = []
    for e in store.list():
        status = "missing: add it again" if not e["exists"] else (f"not usable: {e['problem']}" if e.get("problem")
                                                                   else "ready")
        out.append({"name": e["name"], "kind": e["kind"], "size": format_bytes(e["bytes"]),
                    "on disk": "downloaded (remove deletes it)" if e.get("owned") else "yours (kept on remove)",
                    "source": e["source"], "path": e["path"], "added": local_time(e.get("added"), DATE_AND_MINUTE), "sha256": _sha(e),
                    "status": status})
    for p in store.pending():
        out.append({"name": p["name"], "kind": "", "size": "", "on disk": "partial download", "source": p["source"],
                    "path": p.get("part", ""), "added": local_time(p.get("started"), DATE_AND_MINUTE), "sha256": "",
                    "status": "downloading, or interrupted: add it again to resume"})
    return pd.DataFrame(out, columns=COLUMNS)


def usage_text(store: ModelStore) -> str:
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


def _names(store: ModelStore) -> list[str]:
    return [e["name"] for e in store.list()] + [p["name"] for p in store.pending()]


# ---------------------------------------------------------------------------------- handlers

def add_model(engine: Engine, source: str, kind: str = "auto", sha256: str = "", name: str = "", revision: str = "",
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
    store = model_store.of(engine)
    patterns = list(CONFIG_PATTERNS) if files and "config" in files.lower() and "weights" not in files.lower() \
        else None
    kind = "config" if patterns and (kind or "auto") == "auto" else (kind or "auto")
    options = {"kind": kind, "name": name or None, "revision": revision or None, "sha256": sha256 or None,
               "allow_patterns": patterns}
    capability.check({"source": source, **options}, {})
    # Fast: parse, name, network (a sub-second check), local validity. Offline fails here.
    checked = store.check(source, kind, name=name or None, revision=revision or None)
    options["name"] = checked["name"]
    if not checked["remote"] or checked["cached"]:
        return _public(store.add(source, progress=lambda f, m: progress(f, desc=m), **options))
    return start_job(engine, JOB_CAPABILITY, {"source": source, **options}, {}, progress, then=_added)


def _added(result: str) -> dict:
    with open(result) as f:
        return _public(json.load(f))


def list_models(engine: Engine) -> list[dict]:
    """Every registered model: name, kind (diffusion, sam, config, other), source, local_path, bytes on disk,
    sha256 where known, added (unix time), owned (true: downloaded here, deleted on remove), exists."""
    return [_public(e) for e in model_store.of(engine).list()]


def remove_model(engine: Engine, name: str) -> dict:
    """Remove a model from the store. Files downloaded here are deleted; your own folders and files never.

    Args:
        name: the model's name, as list_models gives it.
    """
    if not name:
        raise UserFacingError("Choose a model to remove.")
    try:
        return _public(model_store.of(engine).remove(name))
    except KeyError:
        raise UserFacingError(f"There is no model {name!r}.") from None


def render(engine: Engine):
    """The table, the disk usage and the names to pick from, as they are now."""
    store = model_store.of(engine)
    return rows(store), usage_text(store), gr.update(choices=_names(store), value=None)


def show(engine: Engine):
    """The disk usage and the table when a page opens."""
    store = model_store.of(engine)
    return usage_text(store), rows(store)


# ---------------------------------------------------------------------------------- layout

def build(engine: Engine) -> None:
    store = model_store.of(engine)
    gr.Markdown(INTRO)
    with gr.Row():
        source = gr.Textbox(label="Source", placeholder="facebook/sam-vit-base  ·  https://…/model.safetensors  ·  "
                                                        "/path/to/folder", scale=4)
        kind = gr.Dropdown(["auto", *store.kind_names()], value="auto", label="Kind", scale=1)
    with gr.Accordion("Options", open=False):
        with gr.Row():
            name = gr.Textbox(label="Name (default: from the source)")
            revision = gr.Textbox(label="Hub revision (branch, tag or commit)")
            sha256 = gr.Textbox(label="sha256 of a single file (optional: checked)")
        files = gr.Radio(list(FILES), value=list(FILES)[0], label="Hub files")
    add = gr.Button("Add", variant="primary")
    added = gr.JSON(label="Added")
    gr.Markdown("### Registered models")
    usage = gr.Markdown(usage_text(store))
    table = gr.Dataframe(rows(store), label="Models", interactive=False, wrap=True)
    with gr.Row():
        pick = gr.Dropdown(label="Model", choices=[e["name"] for e in store.list()], scale=3)
        remove = gr.Button("Remove", variant="stop", scale=1)
        refresh = gr.Button("Refresh", scale=1)
    removed = gr.JSON(label="Removed", visible=False)
    listing = gr.JSON(visible=False)

    # A page opened later sees the models added since start-up.
    gr.on(None, handler(engine, show, "show the models"), None, [usage, table], api_visibility="private")
    redraw = handler(engine, render, "show the models")
    add.click(handler(engine, add_model, "add the model"), [source, kind, sha256, name, revision, files], added,
              api_name="add_model", concurrency_limit=None).then(
        redraw, None, [table, usage, pick], api_visibility="private", show_progress="hidden")
    remove.click(handler(engine, remove_model, "remove the model"), pick, removed, api_name="remove_model").then(
        redraw, None, [table, usage, pick], api_visibility="private", show_progress="hidden")
    refresh.click(handler(engine, list_models, "list the models"), None, listing, api_name="list_models").then(
        redraw, None, [table, usage, pick], api_visibility="private", show_progress="hidden")
