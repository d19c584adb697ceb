"""Denoise: take background noise out of speech (DeepFilterNet3, or RNNoise as the light option),
in an audio file or the sound of a video."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from engine import Engine, seconds_bucket
from engine.media.audio import probe_audio
from ui.components import on_click_queued, run_button
from ui.jobs import start_job
from ui.outputs import new_output_dir

from . import check
from . import model as dn
from .denoisers import available_models


def denoise(engine: Engine, media: str | None, model: str = "deepfilternet",
            progress=gr.Progress()) -> tuple[str, str]:
    """Take background noise (hiss, hum, fans, traffic) out of speech.

    Args:
        media: an audio file, or a video file whose sound is denoised (the picture is copied
            untouched). Files over a minute run as a job on the queue.
        model: "deepfilternet" (DeepFilterNet3: the cleaner result) or "rnnoise" (RNNoise:
            lighter and faster, leaves more noise).

    Returns:
        The denoised sound as a mono 16-bit WAV at the input's sample rate, and the result
        file: that WAV for audio, or for a video the video with the denoised sound (AAC).
    """
    check({"model": model}, {"media": media})
    model = dn.choice(model)
    info = probe_audio(media)
    if info.duration_s is None or info.duration_s > dn.LONG_S:
        # Long results stay in their job's folder, beside the WAV the job wrote.
        return start_job(engine, dn.DENOISE_LONG, {"model": model}, {"media": media}, progress, then=_with_wav)
    # Short results go to the temp folder, which Gradio serves.
    with engine.run("denoise", bucket=seconds_bucket(info.duration_s)) as run:
        wav, result = dn.denoise_file(run.call, media, new_output_dir("denoise"), model)
    return str(wav), str(result)


def _with_wav(result: str):
    return str(Path(result).with_name("denoised.wav")), result


def chosen_model(media, model, *_) -> list[str]:
    """The model a denoise request uses (its model choice), for the cost line."""
    return [dn.MODELS[dn.choice(model)]] if dn.choice(model) in dn.MODELS else []


def build(engine: Engine) -> None:
    models = available_models()
    gr.Markdown("Speech with the noise taken out. **deepfilternet** (DeepFilterNet3) cleans best; "
                "**rnnoise** is lighter and faster. Both work at 48 kHz on mono sound; the WAV comes "
                "back at the input's rate. A video keeps its picture and gets the cleaned sound. "
                "Files over a minute run as a job and show on the Jobs tab.")
    with gr.Row():
        with gr.Column():
            media = gr.File(label="Audio or video", file_types=["audio", "video"], type="filepath")
            model = gr.Radio(models, value=models[0] if models else None, label="Model")
            go = run_button("Denoise")
        with gr.Column():
            cleaned = gr.Audio(label="Denoised", type="filepath", format="wav", interactive=False)
            result = gr.File(label="Result file (WAV, or the video with the cleaned sound)", interactive=False)
    # Long files wait in the job queue, which decides what runs when; short ones are one quick call.
    on_click_queued(engine, go, denoise, "denoise the audio", [media, model], [cleaned, result],
                    api_name="denoise", models=chosen_model)
