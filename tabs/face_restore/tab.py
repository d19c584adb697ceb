"""Restore faces: GFPGAN v1.4 or CodeFormer on every face of a photo."""
from __future__ import annotations

import functools

import gradio as gr
import numpy as np

from analysers.face_detector import FACE_DETECTOR
from engine import Engine, UserFacingError, pixel_bucket
from tabs.face_restore import check
from tabs.face_restore import model as fr
from tabs.face_restore.video import kind_name
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, page_only, photo_input,
                           run_button, video_input, video_output)
from ui import model_files
from ui.jobs import start_job
from ui.safety import gate_output

MODELS = list(fr.ENTRIES)   # "GFPGAN 1.4", "CodeFormer"
NOTE = ("Finds every face with the face detector, aligns it to the FFHQ template at 512x512, restores "
        "it and pastes it back under a soft mask (80 % restored, as FaceFusion does). "
        "**GFPGAN 1.4** (Apache-2.0, with non-commercial third-party parts) sharpens and cleans; "
        "**CodeFormer** (S-Lab licence, non-commercial) takes a fidelity weight: towards 0 it "
        "invents more detail, towards 1 it stays closer to the photo. Both are files you download "
        "once; no package ships them.")


def file_status(engine: Engine, model_name: str) -> str | None:
    """None when the model's file is in place and fits, else what to fetch, from where, and where
    to put it: the place this engine's spec loads it from."""
    entry = fr.entry_named(model_name)
    loader = engine.registry.get(entry.name).loader
    return fr.status(loader.data_dir, entry)


def restore_faces(engine: Engine, image: np.ndarray | None, model_name: str = "GFPGAN 1.4",
                  fidelity: float = fr.DEFAULT_FIDELITY) -> tuple[np.ndarray, dict]:
    """Restore every face in a photo with GFPGAN v1.4 or CodeFormer.

    Args:
        image: the photo, RGB.
        model_name: "GFPGAN 1.4" or "CodeFormer".
        fidelity: CodeFormer's weight w, 0 to 1 (default 0.5): smaller gives more invented
            detail, larger stays closer to the photo. GFPGAN ignores it.

    Returns:
        The photo with each face restored and pasted back, and JSON {"faces": n, "model": name}.
        Without the model's file, a message says which file to download, from where, and
        where to put it.
    """
    check({"model": model_name, "fidelity": fidelity}, {"image": image})
    entry = fr.entry_named(model_name)
    loader = engine.registry.get(entry.name).loader
    missing = fr.problem(loader.data_dir, entry, model_name)
    if missing:
        raise UserFacingError(missing)
    height, width = image.shape[:2]
    max_pixels = engine.registry.get(FACE_DETECTOR).max_pixels
    with engine.run("restore_faces", bucket=pixel_bucket(width, height)) as run:
        restored, count = fr.restore_photo(run.call, image, entry.name, float(fidelity), max_pixels)
    return gate_output(engine, restored), {"faces": count, "model": model_name}


def restore_faces_video(engine: Engine, video: str | None, model_name: str = "GFPGAN 1.4",
                        fidelity: float = fr.DEFAULT_FIDELITY, progress=gr.Progress()) -> str:
    """Restore every face in every frame of a video with GFPGAN v1.4 or CodeFormer; the sound is
    kept. Runs as a job on the queue (jobs of one model run one after another).

    Args:
        video: the video file.
        model_name: "GFPGAN 1.4" or "CodeFormer".
        fidelity: CodeFormer's weight w, 0 to 1 (default 0.5). GFPGAN ignores it.

    Returns:
        The video with its faces restored (H.264 MP4, same frames, size, fps and sound). Without
        the model's file, a message says which file to download first.
    """
    check({"model": model_name, "fidelity": fidelity}, {"video": video})
    entry = fr.entry_named(model_name)
    missing = fr.problem(engine.registry.get(entry.name).loader.data_dir, entry, model_name)
    if missing:   # refused now, not after the queue
        raise UserFacingError(missing)
    return start_job(engine, kind_name(model_name), {"fidelity": float(fidelity)}, {"video": video}, progress)


def download_model_file(engine: Engine, model_name: str = "GFPGAN 1.4", accept_licence: bool = False,
                        progress=gr.Progress()) -> str:
    """Download the chosen restorer's ONNX file as a job (resumable; follow or cancel it in the Jobs tab).

    Args:
        model_name: "GFPGAN 1.4" or "CodeFormer".
        accept_licence: both files are not for commercial use: the download needs this set.

    Returns:
        The file's status line once it is in place.
    """
    return model_files.download(engine, fr.entry_named(model_name), functools.partial(status_line, engine, model_name),
                                progress, accept_licence)


def bring_model_file(engine: Engine, model_name: str, file: str | None, accept_licence: bool = False,
                     trust: bool = False) -> str:
    """Use an ONNX file you already have as the chosen restorer's.

    Args:
        model_name: "GFPGAN 1.4" or "CodeFormer".
        file: the .onnx file.
        accept_licence: both files are not for commercial use: using one needs this set.
        trust: take a file whose sha256 is not one of the known good copies, if its inputs and
            outputs fit.

    Returns:
        The file's status line.
    """
    model_files.bring(engine, fr.entry_named(model_name), file, accept_licence, trust)
    return status_line(engine, model_name)


def status_line(engine: Engine, model_name: str) -> str:
    """The chosen model's file status line."""
    missing = file_status(engine, model_name)
    return f"**{model_name}: file missing.**\n\n{missing}" if missing else f"**{model_name}**: file in place."


def model_status(engine: Engine, model_name: str) -> tuple[str, dict]:
    """The chosen model's file status line, and the fidelity slider shown for CodeFormer only."""
    return status_line(engine, model_name), gr.update(visible=fr.entry_named(model_name).name == fr.CODEFORMER.name)


def build(engine: Engine) -> None:
    gr.Markdown(NOTE)
    first, fidelity_shown = model_status(engine, MODELS[0])
    with gr.Row():
        with gr.Column():
            image = photo_input("Photo")
            model = gr.Radio(MODELS, value=MODELS[0], label="Model")
            status = gr.Markdown(first)
            fidelity = gr.Slider(0.0, 1.0, value=fr.DEFAULT_FIDELITY, step=0.05, label="Fidelity (CodeFormer)",
                                 **{k: v for k, v in fidelity_shown.items() if k == "visible"})
            run = run_button("Restore faces")
            with gr.Accordion("Get the model file", open=first.startswith(f"**{MODELS[0]}: file missing")):
                accept = gr.Checkbox(label="I accept the model's licence (not for commercial use)")
                download = gr.Button("Download")
                upload = gr.File(label="Or use a file you have (.onnx)", file_types=[".onnx"], type="filepath")
                trust = gr.Checkbox(label="Trust this file although its sha256 is not a known good copy's")
                use = gr.Button("Use this file")
        with gr.Column():
            result = image_output("Restored")
            found = gr.JSON(label="Faces (JSON)")
    gr.Markdown(f"### In a video\n{VIDEO_JOB_NOTE} Every frame is searched and its faces restored with the "
                "model chosen above; the sound is kept.")
    with gr.Row():
        with gr.Column():
            clip = video_input()
            go = run_button("Restore faces in the video")
        restored_clip = video_output("Restored")

    def show_model(model_name: str) -> tuple[str, dict]:
        return model_status(engine, model_name)

    page_only(model.change, show_model, model, [status, fidelity])
    on_click(engine, download, download_model_file, "download the model file", [model, accept], status,
             api_name="restore_faces_download")
    on_click(engine, use, bring_model_file, "use the model file", [model, upload, accept, trust], status,
             api_name="restore_faces_bring")
    on_click(engine, run, restore_faces, "restore the faces", [image, model, fidelity], [result, found],
             api_name="restore_faces", models=chosen_model)
    on_click_queued(engine, go, restore_faces_video, "restore the faces in the video", [clip, model, fidelity],
                    restored_clip, api_name="restore_faces_video", models=chosen_model)


def chosen_model(image, model_name, *_) -> list[str]:
    """The models a request uses (the detector and the chosen restorer), for the cost line."""
    entry = fr.ENTRIES.get(model_name)
    return [FACE_DETECTOR] + ([entry.name] if entry else [])
