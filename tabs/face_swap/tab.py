"""Swap faces: a source photo's face onto every face, or one chosen face, of a target photo."""
from __future__ import annotations

import functools

import gradio as gr
import numpy as np

from analysers.face_detector import FACE_DETECTOR
from engine import Engine, UserFacingError, pixel_bucket
from tabs.face_swap import check
from tabs.face_swap import model as fs
from tabs.face_swap.video import VIDEO_JOB
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, page_only, photo_input,
                           picture_file_input, run_button, video_input, video_output)
from ui import model_files
from ui.jobs import start_job
from ui.safety import gate_output

FILES = list(fs.ENTRIES)   # the swapper, then its embedder
WHICH = [fs.EVERY] + [str(n) for n in range(1, 11)]
NOTE = ("Puts the largest face of the **source** photo onto every face of the **target** photo, or onto "
        "one (1 is the largest face, 2 the next...). The faces are found by the face detector; the "
        "source face's identity comes from ArcFace, and InsightFace's **inswapper_128** redraws each "
        "target face at 128x128 with it, pasted back under a soft mask; **match colours** gives the new "
        "face the skin tone and light of the face it replaces. Both networks are InsightFace's, "
        "**for non-commercial use only**, and are files you download once; no package ships them. "
        "Swap only faces you have the right to use.")


def file_status(engine: Engine, name: str) -> str | None:
    """None when the file is in place and fits, else what to fetch, from where, and where to put
    it: the place this engine's spec loads it from."""
    entry = fs.entry_named(name)
    return fs.status(engine.registry.get(entry.name).loader.data_dir, entry)


def missing_files(engine: Engine) -> None:
    """Raises a plain message naming the files not in place (refused now, not after the queue)."""
    missing = fs.problems(engine.registry.get(fs.INSWAPPER.name).loader.data_dir)
    if missing:
        raise UserFacingError(missing)


def swap_faces(engine: Engine, source: np.ndarray | None, target: np.ndarray | None,
               which: str | int = fs.EVERY, colour_match: bool = False) -> tuple[np.ndarray, dict]:
    """Put the face of one photo onto the faces of another (InsightFace inswapper_128, non-commercial).

    Args:
        source: the photo whose (largest) face is put in, RGB.
        target: the photo whose faces are replaced, RGB.
        which: "every face", or the number of one face of the target, 1 being the largest
            (the numbers follow face size; the JSON lists the boxes in that order).
        colour_match: give each new face the colours (skin tone, light) of the face it replaces.

    Returns:
        The target photo with the chosen faces swapped, and JSON {"faces": n, "swapped": [numbers],
        "boxes": [[x1, y1, x2, y2], ...]} (largest first). Without the model files, a message says
        which file to download, from where, and where to put it.
    """
    check({"which": which}, {"source": source, "target": target})
    missing_files(engine)
    height, width = target.shape[:2]
    max_pixels = engine.registry.get(FACE_DETECTOR).max_pixels
    with engine.run("swap_faces", bucket=pixel_bucket(width, height)) as run:
        swapped, info = fs.swap_photo(run.call, source, target, which, max_pixels, bool(colour_match))
    return gate_output(engine, swapped), info


def swap_faces_video(engine: Engine, source: str | None, video: str | None, which: str | int = fs.EVERY,
                     colour_match: bool = False, progress=gr.Progress()) -> str:
    """Put the face of one photo onto the faces in every frame of a video; the sound is kept.
    Runs as a job on the queue (face swap jobs run one after another while the swapper is loaded).

    Args:
        source: the photo whose (largest) face is put in.
        video: the video file.
        which: "every face", or one person: the face with this number (1 = the largest) in the
            first frame that shows that many faces, followed through the video by identity.
        colour_match: give each new face the colours (skin tone, light) of the face it replaces.

    Returns:
        The video with its faces swapped (H.264 MP4, same frames, size, fps and sound). Without
        the model files, a message says which file to download first.
    """
    check({"which": which}, {"source": source, "video": video})
    missing_files(engine)
    return start_job(engine, VIDEO_JOB, {"which": which, "colour_match": bool(colour_match)},
                     {"source": source, "video": video}, progress)


def download_model_file(engine: Engine, name: str = FILES[0], accept_licence: bool = False,
                        progress=gr.Progress()) -> str:
    """Download one of the face swap's ONNX files as a job (resumable; follow or cancel it in the Jobs tab).

    Args:
        name: "Face swapper (inswapper_128)" or "Face embedder (ArcFace w600k_r50)".
        accept_licence: both files are not for commercial use: the download needs this set.

    Returns:
        The files' status line once it is in place.
    """
    return model_files.download(engine, fs.entry_named(name), functools.partial(model_status, engine), progress,
                                accept_licence)


def bring_model_file(engine: Engine, name: str, file: str | None, accept_licence: bool = False,
                     trust: bool = False) -> str:
    """Use an ONNX file you already have as one of the face swap's files.

    Args:
        name: "Face swapper (inswapper_128)" or "Face embedder (ArcFace w600k_r50)".
        file: the .onnx file.
        accept_licence: both files are not for commercial use: using one needs this set.
        trust: take a file whose sha256 is not one of the known good copies, if its inputs and
            outputs fit.

    Returns:
        The files' status line.
    """
    model_files.bring(engine, fs.entry_named(name), file, accept_licence, trust)
    return model_status(engine)


def model_status(engine: Engine) -> str:
    """One line per file: in place, or missing with what to do."""
    lines = []
    for name in FILES:
        missing = file_status(engine, name)
        lines.append(f"**{name}: file missing.**\n\n{missing}" if missing else f"**{name}**: file in place.")
    return "\n\n".join(lines)


def build(engine: Engine) -> None:
    gr.Markdown(NOTE)
    first = model_status(engine)
    with gr.Row():
        with gr.Column():
            source = photo_input("Source photo (the face to put in)")
            target = photo_input("Target photo (the faces to replace)")
            which = gr.Dropdown(WHICH, value=fs.EVERY, label="Which target face (1 = the largest)")
            colours = gr.Checkbox(label="Match colours (the new face takes the skin tone and light of the old)")
            run = run_button("Swap faces")
            status = gr.Markdown(first)
            with gr.Accordion("Get the model files", open="file missing" in first):
                name = gr.Radio(FILES, value=FILES[0], label="File")
                accept = gr.Checkbox(label="I accept the model's licence (not for commercial use)")
                download = gr.Button("Download")
                upload = gr.File(label="Or use a file you have (.onnx)", file_types=[".onnx"], type="filepath")
                trust = gr.Checkbox(label="Trust this file although its sha256 is not a known good copy's")
                use = gr.Button("Use this file")
        with gr.Column():
            result = image_output("Swapped")
            found = gr.JSON(label="Faces (JSON)")
    gr.Markdown(f"### In a video\n{VIDEO_JOB_NOTE} The source photo's face goes onto every face, or onto one "
                "person: the face numbered as chosen above in the first frame that shows that many faces, "
                "then followed by who it is (not by size), as people move; the sound is kept.")
    with gr.Row():
        with gr.Column():
            clip_source = picture_file_input("Source photo (the face to put in)")
            clip = video_input()
            go = run_button("Swap faces in the video")
        swapped_clip = video_output("Swapped")

    def show_files(_name: str) -> str:
        return model_status(engine)

    page_only(name.change, show_files, name, status)
    on_click(engine, download, download_model_file, "download the model file", [name, accept], status,
             api_name="swap_faces_download")
    on_click(engine, use, bring_model_file, "use the model file", [name, upload, accept, trust], status,
             api_name="swap_faces_bring")
    on_click(engine, run, swap_faces, "swap the faces", [source, target, which, colours], [result, found],
             api_name="swap_faces", models=used_models)
    on_click_queued(engine, go, swap_faces_video, "swap the faces in the video", [clip_source, clip, which, colours],
                    swapped_clip, api_name="swap_faces_video", models=used_models)


def used_models(*_) -> list[str]:
    """The models a request uses (the detector, the embedder and the swapper), for the cost line."""
    return [FACE_DETECTOR, fs.ARCFACE.name, fs.INSWAPPER.name]
