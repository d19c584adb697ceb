"""Generate: txt2img, img2img and inpaint with the Stable Diffusion family models added in the
Models tab (1.x, 2.x, XL, turbo). Seeds reproduce images; every PNG carries its parameters."""
from __future__ import annotations

import dataclasses
import tempfile

import gradio as gr
import numpy as np
from PIL import Image

from engine import Engine, UserFacingError, pixel_bucket
from tabs.generate import checkpoint, registry
from tabs.generate.batch import batch_capability, batch_images
from tabs.generate.images import to_mask
from tabs.generate.outputs import save_outputs
from tabs.generate.pipeline import generate
from tabs.generate.costs import (costed, img2img_bucket, img2img_size, inpaint_bucket, inpaint_size,
                                  txt2img_bucket, txt2img_size)
from tabs.generate.png_info import read_parameters
from tabs.generate.request import MAX_BATCH, MAX_COUNT, MAX_SIDE, MAX_STEPS, Request, check_request
from ui.components import run_button
from ui.handlers import handler
from ui.jobs import start_job
from ui.safety import gate_output

NO_MODELS = ("**No image generation model yet.** Add one in the **Models** tab: a hub id "
             "(for example `stabilityai/sd-turbo` or `stable-diffusion-v1-5/stable-diffusion-v1-5`), the URL "
             "of a single-file `.safetensors` checkpoint, or a local diffusers folder. Then press ↻ here.")


def _model(engine: Engine, name: str | None) -> str:
    names = registry.diffusion_models(engine)
    if not names:
        raise UserFacingError("No image generation model yet: add one in the Models tab (a hub id, a .safetensors "
                              "URL or a local folder), then pick it here.")
    if not name:
        raise UserFacingError("Choose a model first.")
    if name not in names:
        raise UserFacingError(f"There is no image model {name!r}; added models: {', '.join(names)}.")
    return name


def _gate(engine: Engine, images: list[Image.Image]) -> list[tuple[Image.Image, str]]:
    """Each image as it may be shown (the NSFW gate on public links), captioned with its seed."""
    shown = []
    for img in images:
        array = np.asarray(img)
        gated = gate_output(engine, array)
        if gated is not array:
            blurred = Image.fromarray(gated)
            blurred.info["parameters"] = img.info.get("parameters", "") + ", Hidden: NSFW gate"
            img = blurred
        shown.append((img, f"seed {img.info.get('seed', '?')}"))
    return shown


def _run(engine: Engine, mode: str, model: str | None, request: Request, image=None, mask=None,
         progress: gr.Progress | None = None) -> tuple[list, dict]:
    """One interactive call: the images shown, saved under data/outputs, and what made them."""
    name = _model(engine, model)
    request = check_request(mode, request, image, mask)
    side = request.width or 512, request.height or 512

    def report(step: int, total: int) -> None:
        if progress is not None:
            progress(step / max(total, 1), desc=f"step {step} of {total}")

    with engine.run(mode, bucket=pixel_bucket(side[0] * request.batch, side[1])) as r:
        images = generate(r.call, name, mode, request, image, mask, progress=report)
        tier = r.record.tier
    folder = save_outputs(engine.data_dir, mode, images)
    info = {"seeds": [int(img.info["seed"]) for img in images], "tier": tier, "model": name,
            "parameters": images[0].info["parameters"] if images else "", "saved_in": str(folder)}
    return _gate(engine, images), info


# ---------------------------------------------------------------------------------- API handlers

def txt2img(engine: Engine, model: str, prompt: str, negative_prompt: str = "", steps: int = 25,
            guidance: float = 7.0, width: int = 512, height: int = 512, seed: int = -1, batch_size: int = 1,
            progress=gr.Progress()) -> tuple[list, dict]:
    """Make images from a text prompt with a Stable Diffusion family model.

    Args:
        model: the model's name, as listed in the Models tab.
        prompt: what to draw.
        negative_prompt: what to keep out of the picture.
        steps: denoising steps (turbo models: 1-4; others: 20-50).
        guidance: classifier-free guidance scale (turbo models: 0).
        width: image width in px, a multiple of 8 (rounded), 64-2048.
        height: image height in px, a multiple of 8 (rounded), 64-2048.
        seed: -1 for a random seed; image i of the batch uses seed + i, which reproduces it.
        batch_size: images in one call, 1-8.

    Returns:
        The images (PNGs with their parameters in a 'parameters' text chunk) and a JSON with the
        seeds, the memory tier used and the parameters text.
    """
    request = Request(prompt, negative_prompt, steps, guidance, width, height, seed, batch_size)
    return _run(engine, "txt2img", model, request, progress=progress)


def img2img(engine: Engine, model: str, image: np.ndarray | None, prompt: str, negative_prompt: str = "",
            steps: int = 25, guidance: float = 7.0, strength: float = 0.75, width: int = 512, height: int = 512,
            seed: int = -1, batch_size: int = 1, progress=gr.Progress()) -> tuple[list, dict]:
    """Repaint a picture guided by a prompt.

    Args:
        model: the model's name, as listed in the Models tab.
        image: the starting picture (resized to width x height).
        prompt: what the result should show.
        negative_prompt: what to keep out of the picture.
        steps: denoising steps; only steps x strength of them run.
        guidance: classifier-free guidance scale (turbo models: 0).
        strength: how much of the picture is repainted, 0-1 (1: nothing of it is kept).
        width: output width in px, a multiple of 8, 64-2048.
        height: output height in px, a multiple of 8, 64-2048.
        seed: -1 for a random seed; image i of the batch uses seed + i.
        batch_size: images in one call, 1-8.

    Returns:
        The images (PNGs with their parameters) and a JSON with seeds, tier and parameters.
    """
    request = Request(prompt, negative_prompt, steps, guidance, width, height, seed, batch_size, strength)
    return _run(engine, "img2img", model, request, image, progress=progress)


def inpaint(engine: Engine, model: str, image: np.ndarray | None, mask: np.ndarray | None, prompt: str,
            negative_prompt: str = "", steps: int = 25, guidance: float = 7.0, strength: float = 1.0,
            width: int = 512, height: int = 512, seed: int = -1, batch_size: int = 1,
            progress=gr.Progress()) -> tuple[list, dict]:
    """Repaint the masked part of a picture guided by a prompt.

    Args:
        model: the model's name, as listed in the Models tab.
        image: the picture.
        mask: white (or any bright pixel) where the picture is repainted, black where it is kept;
            for example a mask from the Segment tab.
        prompt: what the repainted part should show.
        negative_prompt: what to keep out of it.
        steps: denoising steps.
        guidance: classifier-free guidance scale (turbo models: 0).
        strength: how much of the masked part is repainted, 0-1.
        width: output width in px, a multiple of 8, 64-2048.
        height: output height in px, a multiple of 8, 64-2048.
        seed: -1 for a random seed; image i of the batch uses seed + i.
        batch_size: images in one call, 1-8.

    Returns:
        The images (PNGs with their parameters) and a JSON with seeds, tier and parameters.
    """
    request = Request(prompt, negative_prompt, steps, guidance, width, height, seed, batch_size, strength)
    return _run(engine, "inpaint", model, request, image, mask, progress=progress)


def generate_batch(engine: Engine, model: str, mode: str, prompt: str, negative_prompt: str = "", steps: int = 25,
                   guidance: float = 7.0, width: int = 512, height: int = 512, seed: int = -1,
                   count: int = 8, strength: float = 0.75, image: str | None = None, mask: str | None = None,
                   progress=gr.Progress()) -> tuple[list, str]:
    """Make many images as a job on the queue: it survives a closed browser and a restart, and jobs
    for the same model run one after another without reloading it.

    Args:
        model: the model's name, as listed in the Models tab.
        mode: txt2img, img2img or inpaint.
        prompt: what to draw.
        negative_prompt: what to keep out of the picture.
        steps: denoising steps.
        guidance: classifier-free guidance scale.
        width: image width in px, 64-2048.
        height: image height in px, 64-2048.
        seed: -1 for a random seed; image i uses seed + i.
        count: how many images, 1-500.
        strength: img2img / inpaint only: how much is repainted, 0-1.
        image: img2img / inpaint only: path of the input picture.
        mask: inpaint only: path of the mask (white = repaint).

    Returns:
        The images and the path of a zip with all PNGs.
    """
    name = _model(engine, model)
    # The seed is made concrete before the job is queued, so a resumed job keeps it.
    request = Request(prompt, negative_prompt, steps, guidance, width, height, seed, 1, strength).resolved()
    params = {"model": name, "mode": mode, "count": int(count), "request": dataclasses.asdict(request)}
    inputs = {k: v for k, v in (("image", image), ("mask", mask)) if v}
    return start_job(engine, batch_capability(name), params, inputs, progress, then=_batch_shown)


def _batch_shown(result: str):
    return [(path, None) for path in batch_images(result)], result


def png_info(engine: Engine, file: str | None) -> dict:
    """Read the generation parameters stored in a PNG (by this app or by A1111).

    Args:
        file: the PNG file.
    """
    if not file:
        return {}
    try:
        return read_parameters(file) or {"parameters": None}
    except (OSError, Image.DecompressionBombError) as exc:
        # PIL's message names the server's temp path: the user gets plain words.
        raise UserFacingError("This file is not a readable PNG picture.") from exc


# ---------------------------------------------------------------------------------- UI handlers

def refresh(engine: Engine, current: str | None):
    """The model list again (models added since), keeping the current choice when it is still there."""
    names = registry.diffusion_models(engine)
    value = current if current in names else (names[0] if names else None)
    return gr.update(choices=names, value=value), gr.update(visible=not names)


def apply_defaults(engine: Engine, name: str | None):
    """A model's native size, steps and guidance (turbo: 2 steps, no guidance) on the txt2img tab."""
    if not name or name not in registry.diffusion_models(engine):
        return [gr.update()] * 4
    d = checkpoint.defaults(registry.entry(engine, name))
    return (gr.update(value=d["steps"]), gr.update(value=d["guidance"]), gr.update(value=d["width"]),
            gr.update(value=d["height"]))


def split_editor(engine: Engine, editor: dict | None, uploaded_mask: np.ndarray | None):
    """The ImageEditor's background and its painted layers as one mask (plus an uploaded mask)."""
    if not editor or editor.get("background") is None:
        raise UserFacingError("Upload a picture first.")
    background = np.asarray(editor["background"])
    height, width = background.shape[:2]
    mask = np.zeros((height, width), bool)
    for layer in editor.get("layers") or []:
        layer = np.asarray(layer)
        if layer.ndim == 3 and layer.shape[2] == 4:
            mask |= layer[..., 3] > 0
        elif layer.ndim >= 2:
            mask |= (layer if layer.ndim == 2 else layer.max(axis=2)) > 127
    if uploaded_mask is not None:
        up = to_mask(uploaded_mask).resize((width, height), Image.NEAREST)
        mask |= np.asarray(up) > 127
    if not mask.any():
        raise UserFacingError("Paint over the part to repaint (or upload a mask, e.g. from the Segment tab).")
    return background[..., :3], (mask * 255).astype(np.uint8)


def split_to_files(engine: Engine, editor: dict | None, uploaded_mask: np.ndarray | None):
    """split_editor's picture and mask as PNG files: a batch job takes its inputs as files."""
    picture, drawn = split_editor(engine, editor, uploaded_mask)
    folder = tempfile.mkdtemp(prefix="wimmel-inpaint-")
    image_path, mask_path = f"{folder}/image.png", f"{folder}/mask.png"
    Image.fromarray(picture).save(image_path)
    Image.fromarray(drawn).save(mask_path)
    return image_path, mask_path


def picture_only(engine: Engine, picture: np.ndarray | None):
    """img2img's batch inputs: the picture, no mask."""
    if picture is None:
        raise UserFacingError("Upload a picture first.")
    return picture, None


# ---------------------------------------------------------------------------------- layout

def _controls(strength: float | None):
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=2, scale=3)
        negative = gr.Textbox(label="Negative prompt", lines=2, scale=2)
    with gr.Row():
        steps = gr.Slider(1, MAX_STEPS, value=25, step=1, label="Steps")
        guidance = gr.Slider(0, 20, value=7.0, step=0.5, label="Guidance (CFG)")
        strength_c = (gr.Slider(0.05, 1.0, value=strength, step=0.05, label="Strength")
                      if strength is not None else None)
    with gr.Row():
        width = gr.Slider(64, MAX_SIDE, value=512, step=8, label="Width")
        height = gr.Slider(64, MAX_SIDE, value=512, step=8, label="Height")
        seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)")
        batch = gr.Slider(1, MAX_BATCH, value=1, step=1, label="Batch size")
    return prompt, negative, steps, guidance, strength_c, width, height, seed, batch


def _outputs():
    gallery = gr.Gallery(label="Images", format="png", columns=2, height=480, interactive=False)
    info = gr.JSON(label="Seeds, tier, parameters")
    return gallery, info


def _batch_box(engine: Engine, model, mode: str, prompt, negative, steps, guidance, width, height, seed, strength,
               prepare=None):
    """The batch-job accordion of a sub-tab. `prepare`: (handler, inputs) giving the job's input
    picture and mask as files (img2img, inpaint); txt2img's button is the generate_batch API."""
    with gr.Accordion("Many images: a batch job", open=False):
        gr.Markdown("Runs on the job queue (see the Jobs tab): it survives a closed browser and a "
                    "restart, resumes after its last finished image, and jobs for one model run "
                    "back to back without reloading it. Image i uses seed + i.")
        with gr.Row():
            count = gr.Slider(1, MAX_COUNT, value=8, step=1, label="Images")
            go = gr.Button("Queue the batch")
        gallery = gr.Gallery(label="Batch", format="png", columns=4, height=360, interactive=False)
        archive = gr.File(label="All images (zip)", interactive=False)
    mode_box = gr.Textbox(value=mode, visible=False)
    strength_in = strength if strength is not None else gr.Number(value=0.75, visible=False)
    image_in = gr.Image(type="filepath", visible=False)
    mask_in = gr.Image(type="filepath", image_mode="L", visible=False)
    args = [model, mode_box, prompt, negative, steps, guidance, width, height, seed, count, strength_in,
            image_in, mask_in]
    queue = handler(engine, generate_batch, "queue the batch")
    if prepare is None:
        go.click(queue, args, [gallery, archive], concurrency_limit=None, api_name="generate_batch")
    else:
        go.click(prepare[0], prepare[1], [image_in, mask_in], api_visibility="private").then(
            queue, args, [gallery, archive], concurrency_limit=None, api_visibility="private")


def build(engine: Engine) -> None:
    names = registry.diffusion_models(engine)
    notice = gr.Markdown(NO_MODELS, visible=not names)
    with gr.Row():
        model = gr.Dropdown(names, value=names[0] if names else None, label="Model", scale=4,
                            allow_custom_value=True)   # models added after start-up must pass
        reload = gr.Button("↻", scale=0, min_width=48)

    with gr.Tabs():
        with gr.Tab("txt2img"):
            prompt, negative, steps, guidance, _, width, height, seed, batch = _controls(None)
            go = run_button("Generate")
            gallery, info = _outputs()
            t2i_in = [model, prompt, negative, steps, guidance, width, height, seed, batch]
            run, cost = costed(engine, go, txt2img, "txt2img", t2i_in, txt2img_size, txt2img_bucket)
            cost(go.click(run, t2i_in, [gallery, info], api_name="txt2img", concurrency_limit=1,
                          concurrency_id="generate"))
            _batch_box(engine, model, "txt2img", prompt, negative, steps, guidance, width, height, seed, None)
            t2i_defaults = [steps, guidance, width, height]
        with gr.Tab("img2img"):
            image = gr.Image(label="Picture", type="numpy", image_mode="RGB", sources=["upload", "clipboard"])
            i_prompt, i_negative, i_steps, i_guidance, i_strength, i_width, i_height, i_seed, i_batch = _controls(0.75)
            i_go = run_button("Generate")
            i_gallery, i_info = _outputs()
            i2i_in = [model, image, i_prompt, i_negative, i_steps, i_guidance, i_strength, i_width, i_height,
                      i_seed, i_batch]
            run, cost = costed(engine, i_go, img2img, "img2img", i2i_in, img2img_size, img2img_bucket)
            cost(i_go.click(run, i2i_in, [i_gallery, i_info], api_name="img2img", concurrency_limit=1,
                            concurrency_id="generate"))
            _batch_box(engine, model, "img2img", i_prompt, i_negative, i_steps, i_guidance, i_width, i_height,
                       i_seed, i_strength, prepare=(handler(engine, picture_only, "read the picture"), [image]))
        with gr.Tab("inpaint"):
            gr.Markdown("Paint white over what should change, or upload a mask (white = repaint), for "
                        "example one made in the Segment tab.")
            with gr.Row():
                editor = gr.ImageEditor(label="Picture: paint the part to repaint", type="numpy",
                                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                                        sources=["upload", "clipboard"])
                uploaded_mask = gr.Image(label="Mask (optional)", type="numpy", image_mode="L",
                                         sources=["upload", "clipboard"])
            p_prompt, p_negative, p_steps, p_guidance, p_strength, p_width, p_height, p_seed, p_batch = _controls(1.0)
            p_go = run_button("Generate")
            p_gallery, p_info = _outputs()
            # The API takes the picture and the mask as two images; the editor is split into them here.
            p_image = gr.Image(type="numpy", visible=False)
            p_mask = gr.Image(type="numpy", image_mode="L", visible=False)
            inpaint_in = [model, p_image, p_mask, p_prompt, p_negative, p_steps, p_guidance, p_strength, p_width,
                          p_height, p_seed, p_batch]
            run, cost = costed(engine, p_go, inpaint, "inpaint", inpaint_in, inpaint_size, inpaint_bucket)
            cost(p_go.click(handler(engine, split_editor, "read the painted mask"), [editor, uploaded_mask],
                            [p_image, p_mask], api_visibility="private").then(
                run, inpaint_in, [p_gallery, p_info], api_name="inpaint", concurrency_limit=1,
                concurrency_id="generate"))
            _batch_box(engine, model, "inpaint", p_prompt, p_negative, p_steps, p_guidance, p_width, p_height,
                       p_seed, p_strength,
                       prepare=(handler(engine, split_to_files, "read the painted mask"), [editor, uploaded_mask]))
        with gr.Tab("PNG info"):
            png = gr.File(label="A PNG made here (or by A1111)", file_types=[".png"])
            parameters = gr.JSON(label="Parameters")
            png.change(handler(engine, png_info, "read the PNG"), png, parameters, api_name="png_info")

    reload.click(handler(engine, refresh, "list the models"), model, [model, notice], api_visibility="private",
                 show_progress="hidden")
    model.change(handler(engine, apply_defaults, "read the model's defaults"), model, t2i_defaults,
                 api_visibility="private", show_progress="hidden")
