"""Lip sync: a face's lips moved to any audio with Wav2Lip GAN, in a video or on a still portrait."""
from __future__ import annotations

import functools

import gradio as gr

from analysers.face_detector import FACE_DETECTOR
from engine import Engine, UserFacingError
from store import hub_files
from tabs.lip_sync import check
from tabs.lip_sync import model as ls
from tabs.lip_sync.manifest import WAV2LIP_GAN
from tabs.lip_sync.video import PHOTO_JOB, VIDEO_JOB
from ui.components import (VIDEO_JOB_NOTE, media_input, microphone_for, on_click, on_click_queued,
                           picture_file_input, run_button, video_input, video_output)
from ui import model_files
from ui.jobs import start_job

NAME = "Wav2Lip GAN"
NOTE = ("Moves the lips of a face to any audio: a recording, an audio file, or the sound of a video. "
        "**Wav2Lip GAN** (non-commercial: personal and research use only) redraws the lower half of the "
        "largest face the face detector finds, at 96x96, for every 0.2 s window of the sound. The result "
        "is a video as long as the audio, carrying it: a shorter video is looped, a longer one cut, a "
        "portrait photo held at 25 fps. Frames without a face are left as they are. " + VIDEO_JOB_NOTE +
        " The network is a file you download once; no package ships it.")
UNCHECKED = ("its sha256 could not be checked (no hash of a good copy is published), so it was taken "
             "because you trusted it and its inputs and outputs fit")


def model_status(engine: Engine) -> str:
    """The model file's status line: in place (and whether its hash could be checked), or what to
    fetch, from where, and where to put it: the place this engine's spec loads it from."""
    data_dir = engine.registry.get(WAV2LIP_GAN.name).loader.data_dir
    missing = ls.status(data_dir)
    if missing:
        return f"**{NAME}: file missing.**\n\n{missing}"
    found = hub_files.status(WAV2LIP_GAN, data_dir)
    return f"**{NAME}**: file in place" + ("." if found["sha256_listed"] else f"; {UNCHECKED}.")


def _refuse_missing(engine: Engine) -> None:
    missing = ls.problem(engine.registry.get(WAV2LIP_GAN.name).loader.data_dir)
    if missing:   # refused now, not after the queue
        raise UserFacingError(missing)


def lip_sync(engine: Engine, video: str | None, audio: str | None, progress=gr.Progress()) -> str:
    """Move the lips of the largest face in a video to an audio track. Runs as a job on the queue.

    Args:
        video: the video with the face.
        audio: the sound the lips follow: any audio file, or a video whose sound is used.

    Returns:
        A video as long as the audio (H.264 MP4, the video's size and fps; a shorter video is
        looped, a longer one cut), carrying the audio. Without the model file, a message says
        which file to download first.
    """
    check({}, {"video": video, "audio": audio})
    _refuse_missing(engine)
    return start_job(engine, VIDEO_JOB, {}, {"video": video, "audio": audio}, progress)


def lip_sync_photo(engine: Engine, photo: str | None, audio: str | None, progress=gr.Progress()) -> str:
    """Make a still portrait speak an audio track: a video of the photo with its lips moving. Runs
    as a job on the queue.

    Args:
        photo: the portrait, an image file with one face (the largest is used).
        audio: the sound the lips follow: any audio file, or a video whose sound is used.

    Returns:
        A 25 fps video (H.264 MP4) of the photo, as long as the audio, carrying it. Without the
        model file, a message says which file to download first.
    """
    check({}, {"photo": photo, "audio": audio})
    _refuse_missing(engine)
    return start_job(engine, PHOTO_JOB, {}, {"photo": photo, "audio": audio}, progress)


def download_model_file(engine: Engine, accept_licence: bool = False, trust: bool = False,
                        progress=gr.Progress()) -> str:
    """Download Wav2Lip GAN's ONNX file as a job (resumable; follow or cancel it in the Jobs tab).

    Args:
        accept_licence: the file is not for commercial use: the download needs this set.
        trust: no sha256 of a good copy is published, so the download cannot be checked against
            one: it needs this set; the file is kept only if its inputs and outputs fit.

    Returns:
        The file's status line once it is in place.
    """
    return model_files.download(engine, WAV2LIP_GAN, functools.partial(model_status, engine), progress,
                                accept_licence, trust)


def bring_model_file(engine: Engine, file: str | None, accept_licence: bool = False, trust: bool = False) -> str:
    """Use an ONNX file you already have as Wav2Lip GAN's (FaceFusion's wav2lip_gan_96.onnx).

    Args:
        file: the .onnx file.
        accept_licence: the file is not for commercial use: using it needs this set.
        trust: take a file whose sha256 is not a known good copy's (none is published), if its
            inputs and outputs fit.

    Returns:
        The file's status line.
    """
    model_files.bring(engine, WAV2LIP_GAN, file, accept_licence, trust)
    return model_status(engine)


def build(engine: Engine) -> None:
    gr.Markdown(NOTE)
    first = model_status(engine)
    status = gr.Markdown(first)
    with gr.Accordion("Get the model file", open=first.startswith(f"**{NAME}: file missing")):
        accept = gr.Checkbox(label="I accept the model's licence (not for commercial use)")
        trust = gr.Checkbox(label="Trust the file although its sha256 cannot be checked (none is published); "
                                  "its inputs and outputs are still checked")
        download = gr.Button("Download wav2lip_gan_96.onnx")
        upload = gr.File(label="Or use a file you have (.onnx)", file_types=[".onnx"], type="filepath")
        use = gr.Button("Use this file")
    with gr.Row():
        with gr.Column():
            sound = media_input("Audio the lips follow (or a video, whose sound is used)")
            microphone_for(sound)
    gr.Markdown("### A video")
    with gr.Row():
        with gr.Column():
            clip = video_input()
            go = run_button("Sync the lips in the video")
        synced_clip = video_output("Lip-synced video")
    gr.Markdown("### A portrait photo")
    with gr.Row():
        with gr.Column():
            photo = picture_file_input("Portrait")
            go_photo = run_button("Make the portrait speak")
        synced_photo = video_output("Speaking portrait")

    on_click(engine, download, download_model_file, "download the model file", [accept, trust], status,
             api_name="lip_sync_download")
    on_click(engine, use, bring_model_file, "use the model file", [upload, accept, trust], status,
             api_name="lip_sync_bring")
    on_click_queued(engine, go, lip_sync, "sync the lips in the video", [clip, sound], synced_clip,
                    api_name="lip_sync", models=models_used)
    on_click_queued(engine, go_photo, lip_sync_photo, "make the portrait speak", [photo, sound], synced_photo,
                    api_name="lip_sync_photo", models=models_used)


def models_used(*_) -> list[str]:
    """The models a request uses (the detector and Wav2Lip), for the cost line."""
    return [FACE_DETECTOR, WAV2LIP_GAN.name]
