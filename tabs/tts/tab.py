"""Text to speech: a natural US English voice (Piper en_US-joe-medium), speed control; long text
runs as a job on the queue."""
from __future__ import annotations

import gradio as gr

from engine import Engine, UserFacingError
from engine.media.audio import write_wav
from ui.components import on_click_queued, run_button
from ui.jobs import start_job
from ui.outputs import new_output_dir

from . import check
from . import model as tts


def speak(engine: Engine, text: str | None, speed: float = 1.0, progress=gr.Progress()) -> str:
    """Read text aloud in a US English voice (Piper en_US-joe-medium, 22,050 Hz).

    Args:
        text: the text to speak (up to 200,000 characters). Sentences are spoken one after
            another with a short pause; text over 1,000 characters runs as a job on the queue.
        speed: speaking speed, 0.5 (slow) to 2 (fast); 1 is the voice's natural pace.

    Returns:
        A mono 16-bit WAV file of the speech.
    """
    params = {"text": (text or "").strip(), "speed": speed}
    if len(params["text"]) > tts.LONG_TEXT_CHARS:
        # The job's check runs at submit: text with nothing to speak fails now, not in the queue.
        return start_job(engine, tts.SPEAK_LONG, params, {}, progress)
    check(params, {})
    pieces = tts.plan(params["text"])  # espeak outside the lease: it does not need the voice
    with engine.run("speak", bucket=tts.symbol_bucket(pieces)) as run:
        samples, rate = tts.speak(run.call, pieces, speed)
    # Short results go to the temp folder, which Gradio serves; long ones stay in their job's folder.
    return str(write_wav(new_output_dir("tts") / "speech.wav", samples, rate))


def run_bucket(text: str | None, *_options) -> str | None:
    """The size key speak's run opens with (the longest piece's symbols), for the cost line;
    None for text that goes to a job or has nothing to speak."""
    text = (text or "").strip()
    if not text or len(text) > tts.LONG_TEXT_CHARS:
        return None
    try:
        return tts.symbol_bucket(tts.plan(text))
    except UserFacingError:
        return None


def build(engine: Engine) -> None:
    gr.Markdown("Type English text and hear it read by the Piper voice *joe* (US English). "
                "Numbers and abbreviations are read out; text over 1,000 characters runs as a job "
                "and shows on the Jobs tab.")
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Text", lines=6, max_length=tts.MAX_TEXT_CHARS,
                              placeholder="Hello! This is Wimmel speaking.")
            speed = gr.Slider(tts.MIN_SPEED, tts.MAX_SPEED, value=1.0, step=0.05, label="Speed")
            go = run_button("Speak")
        audio = gr.Audio(label="Speech", type="filepath", format="wav", interactive=False)
    on_click_queued(engine, go, speak, "speak the text", [text, speed], audio, api_name="speak", bucket=run_bucket)
