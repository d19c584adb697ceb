"""The batch job: many images of one request on the job queue, image i with seed + i.

Job kind generate_batch:<model>, one per model, so the queue runs jobs for the same model back to
back without reloading it. A resumed job continues after its last saved image.
"""
from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

from engine import JobContext
from engine.files import atomic_write

from .images import to_mask, to_rgb
from .pipeline import generate
from .png_info import save_png
from .request import Request, check_request

BATCH_PREFIX = "generate_batch:"


def batch_capability(name: str) -> str:
    return BATCH_PREFIX + name


def batch_job(ctx: JobContext) -> str:
    """params: model, mode, count, request (a Request as a dict, its seed concrete); inputs 'image'
    and 'mask' for img2img / inpaint (checked at submit by the capability's check). One lease per
    image, so interactive calls get the model in between. Returns a zip of the PNGs; the PNGs
    themselves are in images/."""
    params = ctx.params
    name, mode, count = params["model"], params["mode"], int(params.get("count", 1))
    inputs = params.get("inputs", {})
    image = to_rgb(ctx.input("image")) if "image" in inputs else None
    mask = to_mask(ctx.input("mask")) if "mask" in inputs else None
    request = check_request(mode, Request.from_dict({**params.get("request", {}), "batch": 1}), image, mask)
    folder = ctx.work_dir / "images"
    done = int(ctx.checkpoint.get("done", 0))
    for i in range(done, count):
        ctx.check_cancelled()
        one = dataclasses.replace(request, seed=request.seed + i)

        def progress(step: int, total: int, i=i) -> None:
            ctx.progress((i + step / max(total, 1)) / count, f"image {i + 1} of {count}, step {step}/{total}")

        images = generate(ctx.call, name, mode, one, image, mask, progress=progress, cancelled=ctx.check_cancelled)
        save_png(images[0], folder / f"{i:04d}-{one.seed}.png")
        ctx.save_checkpoint(done=i + 1)
    result = ctx.work_dir / "images.zip"
    with atomic_write(result) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for png in sorted(folder.glob("*.png")):
            archive.write(png, png.name)
    return str(result)


def batch_images(result: str | os.PathLike) -> list[str]:
    """The PNGs of a finished batch job, from its result path."""
    folder = Path(result).parent / "images"
    return [str(p) for p in sorted(folder.glob("*.png"))]
