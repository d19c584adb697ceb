"""Animate portrait: a portrait takes the head pose and expression of a driving photo, or follows a
driving video (a job), with LivePortrait's four networks."""
from __future__ import annotations

import functools

import gradio as gr
import numpy as np
from PIL import Image

from analysers.face_detector import FACE_DETECTOR
from engine import Engine, UserFacingError, pixel_bucket
from store import HUB_JOB_CAPABILITY, hub_files, hub_messages
from tabs.portrait_animation import check
from tabs.portrait_animation import model as pa
from tabs.portrait_animation.manifest import ENTRIES
from tabs.portrait_animation.video import VIDEO_JOB
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, photo_input, run_button,
                           video_input, video_output)
from ui.errors import user_errors
from ui import model_files
from ui.jobs import start_job
from ui.outputs import new_output_dir
from ui.safety import gate_output
from ui.users import current_user

FILES = list(ENTRIES)   # feature extractor, motion extractor, stitcher, generator
NOTE = ("The **portrait** takes the head pose and the expression of the face in the **driving** photo, or "
        "moves as the face in a driving video moves. LivePortrait's four networks do it: the feature "
        "extractor reads the portrait's face, the motion extractor the pose and expression of each face, "
        "the stitcher keeps the face's edge in place and the generator redraws the face at 512x512, pasted "
        "back under a soft mask. The faces are found by the face detector (the largest face of each picture). "
        "The networks are LivePortrait's (**MIT licence**, commercial use allowed), files you download once; "
        "no package ships them. Animate only faces you have the right to use.")
LICENCE = f"**Licence** of all four files: {pa.FEATURE_EXTRACTOR.licence}."


def _data_dir(engine: Engine):
    return engine.registry.get(pa.GENERATOR.name).loader.data_dir


def _refuse_missing(engine: Engine) -> None:
    missing = pa.problems(_data_dir(engine))
    if missing:   # refused now, before any model or the queue
        raise UserFacingError(missing)


def animate_portrait(engine: Engine, portrait: np.ndarray | None, driving: np.ndarray | None
                     ) -> tuple[np.ndarray, dict]:
    """Give a portrait the head pose and expression of the face in a driving photo (LivePortrait, MIT).

    Args:
        portrait: the photo whose (largest) face is animated, RGB.
        driving: the photo whose (largest) face gives the head pose and expression, RGB.

    Returns:
        The portrait with its face re-posed (same size), and JSON {"portrait_pose": {pitch, yaw,
        roll}, "driving_pose": {...}, "motion": "absolute"} (degrees). Without the four model
        files, a message says which files to download, from where, and where to put them.
    """
    check({}, {"image": portrait, "driving": driving})
    _refuse_missing(engine)
    height, width = portrait.shape[:2]
    max_pixels = engine.registry.get(FACE_DETECTOR).max_pixels
    with engine.run("animate_portrait", bucket=pixel_bucket(width, height)) as run:
        out, info = pa.animate_photo(run.call, FACE_DETECTOR, portrait, driving, max_pixels)
    return gate_output(engine, out), info


def animate_portrait_video(engine: Engine, portrait: np.ndarray | None, video: str | None,
                           progress=gr.Progress()) -> str:
    """Animate a portrait with a driving video: every frame of the video gives a frame of the
    portrait, moved as the driving face moved since the video's first frame (LivePortrait's
    relative motion). Runs as a job on the queue; the driving video's sound is kept.

    Args:
        portrait: the photo whose (largest) face is animated, RGB.
        video: the driving video; its first frame must show the face (it sets the neutral pose).

    Returns:
        A video (H.264 MP4) at the portrait's size with the driving video's frames, fps and sound.
        Without the four model files, a message says which files to download first.
    """
    if portrait is not None and np.ndim(portrait) >= 2 and 0 not in np.shape(portrait)[:2]:
        picture = new_output_dir("portrait") / "portrait.png"   # a job takes files; PNG loses nothing
        Image.fromarray(np.asarray(portrait, np.uint8)).convert("RGB").save(picture)
        portrait = str(picture)
    check({}, {"portrait": portrait, "video": video})
    _refuse_missing(engine)
    return start_job(engine, VIDEO_JOB, {}, {"portrait": portrait, "video": video}, progress)


def download_model_files(engine: Engine, trust: bool = False, progress=gr.Progress()) -> str:
    """Download every missing file of the four as jobs (resumable; follow or cancel them in the Jobs tab).

    Args:
        trust: two of the files (motion extractor, stitcher) have no sha256 in any source, so
            their download cannot be checked against a known copy: they are fetched only with
            this set (their inputs and outputs are still checked).

    Returns:
        The files' status once the downloads are done.
    """
    missing = [e for e in ENTRIES.values() if not hub_files.status(e, engine.data_dir, check=False)["ready"]]
    if not missing:
        return model_status(engine)
    for entry in missing:   # every refusal (no trust, no network) comes now, before any job
        hub_files.check_fetch(entry, engine.data_dir, trust_unlisted=bool(trust) and not entry.sha256)
    params = [{"name": e.name, "trust_unlisted": bool(trust) and not e.sha256} for e in missing]
    with user_errors("start the downloads"):
        for each in params[:-1]:   # downloads run one at a time in order; the last one is followed
            engine.jobs.submit(HUB_JOB_CAPABILITY, each, inputs={}, owner=current_user())
    return start_job(engine, HUB_JOB_CAPABILITY, params[-1], {}, progress,
                     then=model_files.shown_after(functools.partial(model_status, engine)))


def bring_model_file(engine: Engine, name: str, file: str | None, trust: bool = False) -> str:
    """Use an ONNX file you already have as one of the four.

    Args:
        name: "Feature extractor", "Motion extractor", "Stitcher" or "Generator".
        file: the .onnx file.
        trust: take a file whose sha256 is not a known good copy's (for the motion extractor and
            the stitcher no good copy's sha256 is known at all), if its inputs and outputs fit.

    Returns:
        The files' status.
    """
    model_files.bring(engine, pa.entry_named(name), file, trust=trust)
    return model_status(engine)


def file_line(engine: Engine, label: str) -> str:
    entry = ENTRIES[label]
    found = hub_files.status(entry, _data_dir(engine))
    if found["ready"] and found["sha256_listed"]:
        return f"**{label}**: file in place (sha256 checked: a known good copy)."
    if found["ready"]:
        return (f"**{label}**: file in place, but its sha256 could not be checked: no source gives a good "
                f"copy's ({found['sha256']}). Taken because you trusted it; its inputs and outputs fit.")
    return f"**{label}: file missing.**\n\n{hub_messages.explain(entry, _data_dir(engine))}"


def model_status(engine: Engine) -> str:
    """One line per file: in place (and whether its hash was checked), or missing with what to do."""
    return "\n\n".join(file_line(engine, label) for label in FILES)


def build(engine: Engine) -> None:
    gr.Markdown(NOTE)
    first = model_status(engine)
    with gr.Row():
        with gr.Column():
            with gr.Row():
                portrait = photo_input("Portrait (the face to animate)")
                driving = photo_input("Driving photo (pose and expression)")
            run = run_button("Animate the portrait")
        with gr.Column():
            result = image_output("Animated portrait")
            info = gr.JSON(label="Poses (JSON, degrees)")
    gr.Markdown(f"### Driven by a video\n{VIDEO_JOB_NOTE} Each frame of the driving video gives a frame of "
                "the portrait above, moved as the driving face moved since the video's first frame (which must "
                "show the face); the video's sound is kept.")
    with gr.Row():
        with gr.Column():
            clip = video_input()
            go = run_button("Animate with the video")
        animated = video_output("Animated portrait")
    gr.Markdown("### Model files")
    status = gr.Markdown(first)
    with gr.Accordion("Get the model files", open="file missing" in first):
        gr.Markdown(LICENCE)
        trust = gr.Checkbox(label="Trust files whose sha256 cannot be checked (no good copy's is known "
                                  "for the motion extractor and the stitcher)")
        download = gr.Button("Download all missing files")
        name = gr.Radio(FILES, value=FILES[-1], label="Or use a file you have: which one")
        upload = gr.File(label="The .onnx file", file_types=[".onnx"], type="filepath")
        use = gr.Button("Use this file")

    on_click(engine, download, download_model_files, "download the model files", [trust], status,
             api_name="animate_portrait_download")
    on_click(engine, use, bring_model_file, "use the model file", [name, upload, trust], status,
             api_name="animate_portrait_bring")
    on_click(engine, run, animate_portrait, "animate the portrait", [portrait, driving], [result, info],
             api_name="animate_portrait", models=used_models)
    on_click_queued(engine, go, animate_portrait_video, "animate the portrait with the video", [portrait, clip],
                    animated, api_name="animate_portrait_video", models=used_models)


def used_models(*_) -> list[str]:
    """The models a request uses (the detector and the four networks), for the cost line."""
    return [FACE_DETECTOR] + [entry.name for entry in ENTRIES.values()]
