"""Voice activity: where speech is in an audio file or a video's sound (silero-vad), drawn on the
waveform and given as JSON; and the same file with its silences cut out, picture and sound in sync."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from engine import Engine
from engine.media.audio import MediaError, probe_audio, read_audio
from ui.components import media_input, microphone_for, on_click_queued, sub_tab, run_button
from ui.jobs import start_job
from ui.outputs import new_output_dir

from . import CUT_LONG, DETECT_LONG, check, cut
from . import model as vad

_SPEECH = (196, 232, 196)
_WAVE = (90, 100, 120)
_PROB = (230, 120, 20)
_TEXT = (40, 40, 40)


def _clock(seconds: float, step: float) -> str:
    if step >= 60 or seconds >= 60:
        return f"{int(seconds // 60)}:{seconds % 60:02.0f}"
    return f"{seconds:g}"


def _tick_step(duration: float, ticks: int = 10) -> float:
    """1, 2 or 5 times a power of ten (or 15 s, 30 s, minutes) giving about `ticks` ticks."""
    raw = max(duration / ticks, 1e-3)
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if step >= raw:
            return step
    return 3600 * math.ceil(raw / 3600)


def draw_overview(data: dict, width: int = 1000, height: int = 260) -> Image.Image:
    """The waveform (peaks), P(speech) as a line, and the speech segments shaded."""
    left, right, top, bottom = 12, 12, 22, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    duration = max(float(data["duration_s"]), 1e-3)

    def x_of(t: float) -> float:
        return left + plot_w * min(max(t / duration, 0.0), 1.0)

    for seg in data["segments"]:
        draw.rectangle([x_of(seg["start"]), top, x_of(seg["end"]), top + plot_h], fill=_SPEECH)
    peaks, probs, step = data["peaks"], data["probs"], float(data["step_s"])
    middle = top + plot_h / 2
    for px in range(plot_w):  # one column per pixel: the loudest peak it covers
        a = int(px / plot_w * duration / step)
        b = max(a + 1, int((px + 1) / plot_w * duration / step))
        chunk = peaks[a:b]
        if chunk:
            half = min(max(chunk), 1.0) * plot_h / 2
            draw.line([left + px, middle - half, left + px, middle + half], fill=_WAVE)
    points = [(x_of((i + 0.5) * step), top + plot_h * (1 - p)) for i, p in enumerate(probs)]
    if len(points) > 1:
        draw.line(points, fill=_PROB, width=2)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(160, 160, 160))
    tick = _tick_step(duration)
    for i in range(int(duration / tick) + 1):
        t = i * tick
        x = x_of(t)
        draw.line([x, top + plot_h, x, top + plot_h + 4], fill=_TEXT)
        label = _clock(t, tick)
        draw.text((min(max(x - draw.textlength(label, font=font) / 2, 0), width - 40), top + plot_h + 7),
                  label, fill=_TEXT, font=font)
    draw.rectangle([left, 5, left + 12, 15], fill=_SPEECH)
    draw.text((left + 16, 4), "speech", fill=_TEXT, font=font)
    draw.line([left + 80, 10, left + 96, 10], fill=_PROB, width=2)
    draw.text((left + 100, 4), "P(speech)", fill=_TEXT, font=font)
    draw.text((width - right - 120, 4), "time (s)" if duration < 60 else "time (min:s)", fill=_TEXT, font=font)
    return image


def _is_long(duration: float | None) -> bool:
    return duration is None or duration > vad.INTERACTIVE_MAX_S


def _analyse_short(engine: Engine, media: str) -> vad.Analysis:
    """The VAD over a short file (audio, or a video's sound) in one run."""
    samples = read_audio(media, vad.SAMPLE_RATE, max_seconds=vad.INTERACTIVE_MAX_S)
    with engine.run("detect_speech", bucket=vad.seconds_bucket(samples.size / vad.SAMPLE_RATE)) as run:
        return vad.analyse(run.call, samples)


def detect_speech(engine: Engine, media: str | None, threshold: float = 0.5, min_silence_s: float = 0.1,
                  progress=gr.Progress()):
    """Find where speech is in an audio file or a video's soundtrack (silero VAD).

    Args:
        media: the audio file (WAV, MP3, M4A, OGG, FLAC...) or video file (MP4, MKV, WebM...).
        threshold: speech probability (0-1) from which a 32 ms frame counts as speech; speech
            ends once it falls 0.15 below. Lower finds quieter speech, higher ignores more noise.
            Measured on real recordings (docs/quality.md): at 0.5, 97-98 % of the speech of close
            microphone and telephone recordings is found, with 92-99.5 % of what is called speech
            being speech; quiet meeting recordings (AMI) lose a quarter of their speech (77 %
            found, 99.7 % right), which 0.2 brings to 87 % (98 % right) at the cost of calling
            more pauses speech in close-microphone recordings (86 % right there instead of 92 %).
        min_silence_s: a pause must last this long (seconds) to split two segments.

    Returns:
        A plot of the waveform with the speech shaded and the speech probability as a line;
        JSON {"segments": [{"start", "end"}]} with times in seconds (segments shorter than
        0.25 s are dropped; each is padded by 30 ms). Inputs over a minute run as a job.
    """
    options = {"threshold": float(threshold), "min_speech_s": 0.25,
               "min_silence_s": float(min_silence_s), "pad_s": 0.03}
    check(options, {"audio": media})
    if _is_long(probe_audio(media).duration_s):
        return start_job(engine, DETECT_LONG, options, {"audio": media}, progress, then=_overview_file)
    analysis = _analyse_short(engine, media)
    return _overview(vad.overview(analysis, vad.segments_of(analysis, **options)))


def _overview(data: dict):
    return draw_overview(data), {"segments": data["segments"]}


def _overview_file(path: str):
    return _overview(json.loads(Path(path).read_text()))


def cut_silence(engine: Engine, media: str | None, min_silence_s: float = 0.5, progress=gr.Progress()) -> str:
    """Cut the silences out of an audio file or a video, keeping picture and sound in sync.

    Args:
        media: the audio file (WAV, MP3, M4A, OGG, FLAC...) or video file (MP4, MKV, MOV, WebM...).
        min_silence_s: pauses between speech longer than this (seconds, 0.1 or more) are removed;
            0.15 s of each pause is kept next to the speech, so words keep their edges.

    Returns:
        The shortened file: WAV for audio; for a video the same container (MP4, MKV, MOV,
        WebM; other formats become MP4), picture and sound cut at the same frame-exact times.
        Inputs over a minute run as a job on the queue (shown on the Jobs tab).
    """
    params = {"min_silence_s": float(min_silence_s)}
    check(params, {"media": media})
    duration = probe_audio(media).duration_s
    if _is_long(duration):
        return start_job(engine, CUT_LONG, params, {"media": media}, progress,
                         then=functools.partial(_told_cut, duration))
    return _told_cut(duration, str(cut.cut_silence(_analyse_short(engine, media), media, params["min_silence_s"],
                                                   out_dir=new_output_dir("cut"))))


def _told_cut(duration: float | None, result: str) -> str:
    try:
        after = probe_audio(result).duration_s
        if duration and after is not None:
            gr.Info(f"Cut {duration - after:.1f} s of silence: {duration:.1f} s became {after:.1f} s.")
    except MediaError:
        pass  # the note is a courtesy; the file is what was asked for
    return result


def build(engine: Engine) -> None:
    gr.Markdown("Speech found by Silero VAD (32 ms steps). Files up to a minute are answered at once; "
                "longer ones run as a job (Jobs tab).")
    with gr.Tabs():
        with sub_tab("Find speech"):
            with gr.Column():
                media = media_input()
                microphone_for(media)
                threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Speech threshold",
                                      info="0.5 suits close or telephone recordings; for quiet, distant "
                                           "speech (a meeting room) 0.2 finds more of it")
                min_silence = gr.Slider(0.05, 2.0, value=0.1, step=0.05, label="Shortest pause that splits (s)")
                run = run_button("Find speech")
            with gr.Column():
                plot = gr.Image(label="Speech on the waveform", type="pil", format="png", interactive=False)
                segments = gr.JSON(label="Segments (s)")
            on_click_queued(engine, run, detect_speech, "find the speech", [media, threshold, min_silence],
                            [plot, segments], api_name="detect_speech")
        with sub_tab("Cut silence", "Pauses longer than the limit are removed from audio (WAV out) or video (same "
                     "container; picture and sound are cut together, on frame boundaries)."):
            with gr.Column():
                cut_media = media_input()
                cut_min = gr.Slider(0.1, 5.0, value=0.5, step=0.05, label="Cut pauses longer than (s)")
                cut_run = run_button("Cut silence")
            cut_out = gr.File(label="Without the silences", interactive=False)
            on_click_queued(engine, cut_run, cut_silence, "cut the silence", [cut_media, cut_min], cut_out,
                            api_name="cut_silence")
