"""Denoise: take background noise out of speech (DeepFilterNet3, or RNNoise as the light option),
in an audio file or the sound of a video."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ui.errors import user_errors
from ui.outputs import new_output_dir
from ui.jobs import follow_job
from engine import Engine
from engine.media.audio import MediaError, probe_audio
from tabs.denoise import model as dn


# Short results go to the temp folder, which Gradio serves; long ones stay in their job's folder.



def build(engine: Engine) -> None:
    models = dn.available_models()

    def denoise(media: str | None, model: str = "deepfilternet", progress=gr.Progress()) -> tuple[str, str]:
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
        if not media:
            raise gr.Error("Upload an audio or video file first.")
        try:
            model = dn.check_model(model)
        except dn.DenoiseInputError as exc:
            raise gr.Error(str(exc)) from exc
        if model not in models:
            raise gr.Error(f"The {model} model is not available here: {dn.model_unavailable(model)}")
        try:
            info = probe_audio(media)
            if info.duration_s is None or info.duration_s > dn.LONG_S:
                job_id = engine.jobs.submit(dn.DENOISE_LONG, {"model": model}, inputs={"media": media})
                result = follow_job(engine, job_id, progress)
                return str(Path(result).with_name("denoised.wav")), result
            with user_errors("denoise the audio"):
                wav, result = dn.denoise_file(engine, media, new_output_dir("denoise"), model)
        except (MediaError, dn.DenoiseInputError) as exc:
            raise gr.Error(str(exc)) from exc
        return str(wav), str(result)

    gr.Markdown("Speech with the noise taken out. **deepfilternet** (DeepFilterNet3) cleans best; "
                "**rnnoise** is lighter and faster. Both work at 48 kHz on mono sound; the WAV comes "
                "back at the input's rate. A video keeps its picture and gets the cleaned sound. "
                "Files over a minute run as a job and show on the Jobs tab.")
    with gr.Row():
        with gr.Column():
            media = gr.File(label="Audio or video", file_types=["audio", "video"], type="filepath")
            model = gr.Radio(models, value=models[0] if models else None, label="Model")
            go = gr.Button("Denoise", variant="primary")
        with gr.Column():
            cleaned = gr.Audio(label="Denoised", type="filepath", format="wav", interactive=False)
            result = gr.File(label="Result file (WAV, or the video with the cleaned sound)", interactive=False)
    # Long files wait in the job queue, which decides what runs when; short ones are one quick call.
    go.click(denoise, [media, model], [cleaned, result], api_name="denoise", concurrency_limit=None)
