"""Speech to text: English speech from an audio file, a video's soundtrack or the microphone becomes
text, timed segments, SRT and WebVTT subtitles, and a video with subtitles."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import gradio as gr

from engine import Engine
from engine.media.audio import probe_audio, read_audio
from ui.components import media_input, microphone_for, on_click_queued, video_output, run_button
from ui.jobs import start_job
from ui.outputs import new_output_dir

from . import check, long_input
from . import model as stt


def transcribe(engine: Engine, media: str | None, timestamps: str = "segment", burn_in: bool = False,
               progress=gr.Progress()):
    """Transcribe English speech in an audio file or a video's soundtrack.

    Args:
        media: the audio file (WAV, MP3, M4A, OGG, FLAC...) or video file (MP4, MKV, WebM...).
        timestamps: "segment" for subtitles that follow sentences and pauses (at most two lines
            of 42 characters, 7 s each), or "word" for one subtitle per word.
        burn_in: for a video: draw the subtitles into the picture; otherwise they are added as a
            track that players can switch on and off.

    Returns:
        The text; JSON {"text", "segments": [{"start", "end", "text", "words": [{"start",
        "end", "word"}]}]} with times in seconds; the SRT file; the WebVTT file; and, when the
        input was a video, the video with its subtitles (MP4). Inputs over a minute run as a
        job on the queue (shown on the Jobs tab).
    """
    params, inputs = {"timestamps": timestamps, "burn": bool(burn_in)}, {"media": media}
    check(params, inputs)
    info = probe_audio(media)
    if info.duration_s is None or info.duration_s > stt.MAX_DIRECT_S:
        return start_job(engine, stt.LONG_JOB, params, inputs, progress,
                         then=functools.partial(_shown_job, bool(burn_in)))
    samples = read_audio(media, stt.SAMPLE_RATE, max_seconds=stt.MAX_DIRECT_S)
    with engine.run(stt.CAPABILITY, bucket=stt.duration_bucket(samples.size / stt.SAMPLE_RATE)) as run:
        transcript = stt.transcribe(run.call, samples)
    folder = new_output_dir("stt")
    files = {**stt.write_outputs(transcript, folder, timestamps), "video": None}
    if info.has_video:
        files["video"] = stt.subtitled_video(Path(media), files["srt"], folder / "subtitled.mp4", bool(burn_in))
    return _shown(transcript, files, bool(burn_in))


def _shown_job(burn_in: bool, result: str):
    files = long_input.job_outputs(result)
    return _shown(json.loads(files["json"].read_text(encoding="utf-8")), files, burn_in)


def _shown(transcript: dict, files: dict, burn_in: bool):
    video = None
    if files["video"] is not None:
        # Soft subtitles need the player to be told about them; burned ones are in the picture.
        video = str(files["video"]) if burn_in else (str(files["video"]), str(files["vtt"]))
    return transcript["text"], transcript, str(files["srt"]), str(files["vtt"]), video


def build(engine: Engine) -> None:
    gr.Markdown("English speech to text with Whisper tiny.en, on the CPU. Files up to a minute are "
                "answered at once; longer ones run as a job (Jobs tab) that survives a restart. "
                "A video gets its subtitles as a track, or drawn into the picture. On real recordings "
                "about 1 word in 11 comes out wrong (word error rate 9 %: 4 % on a clearly read book, "
                "16 % on a telephone call).")
    with gr.Row():
        with gr.Column():
            media = media_input()
            microphone_for(media)
            timestamps = gr.Radio(list(stt.TIMESTAMPS), value="segment", label="Subtitle timing",
                                  info="segment: sentences and pauses; word: one subtitle per word")
            burn_in = gr.Checkbox(value=False, label="Burn subtitles into the video",
                                  info="for video input; otherwise they are a track players can switch off")
            run = run_button("Transcribe")
        with gr.Column():
            text = gr.Textbox(label="Text", lines=6, buttons=["copy"], interactive=False)
            with gr.Row():
                srt = gr.File(label="SRT", interactive=False)
                vtt = gr.File(label="WebVTT", interactive=False)
            video = video_output("Video with subtitles")
            details = gr.JSON(label="Segments and words (JSON)", open=False)
    on_click_queued(engine, run, transcribe, "transcribe the speech", [media, timestamps, burn_in],
                    [text, details, srt, vtt, video], api_name="transcribe")
