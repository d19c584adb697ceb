"""The tiny Stable Diffusion pipeline under every memory tier: load time, per-step time, weights
resident on the device after the load, and the peak during a call (torch.cuda.max_memory_allocated
on CUDA, the process's RSS above its start on the CPU). Then one loaded pipeline walks down the
ladder with set_tier (the OOM degrade path) and back up again (a request planned with memory
back): each rung's image is compared with the full tier's, and each change of tier is timed
(set_tier_s: a change of flags moves no weight; a change of placement undoes the old one).

    python bench/gpu_tiers.py                       # cuda:0 when there is one, else the CPU
    python bench/gpu_tiers.py --device cpu --size 64 --steps 4
    python bench/gpu_tiers.py --channels 256 512 --size 512   # a wider UNet: weights matter more

Prints one line per tier, then the whole result as one JSON line. Nothing is downloaded: the
pipeline is built from configs (tests/tiny_diffusion.py) in a temporary folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MiB = 1024**2


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _timed_call(pipe, device: str, request, meter):
    """(images, seconds per step (median), seconds for the call, peak bytes) of one txt2img call."""
    import torch

    stamps: list[float] = []

    def progress(step: int, total: int) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        probe = None
    else:
        probe = meter.probe("cpu")
    started = time.perf_counter()
    images = pipe.generate("txt2img", request, progress=progress)
    _sync(device)
    call_s = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if probe is None else probe.stop().device_delta_bytes
    steps = [b - a for a, b in zip(stamps, stamps[1:])] or [call_s]
    return images, statistics.median(steps), call_s, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda:0 (default when available) or cpu")
    parser.add_argument("--size", type=int, default=None, help="image side in px (default: 256 CUDA, 64 CPU)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--channels", type=int, nargs=2, default=(32, 64), help="UNet block widths")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--group-stream", action="store_true", help="group offloading with a CUDA stream")
    args = parser.parse_args()

    import numpy as np
    import torch

    from engine.measure import METER
    from tabs.generate import tiers as mt
    from tabs.generate.checkpoint import DiffusionModel
    from tabs.generate.pipeline import load
    from tabs.generate.request import Request
    from tiny_diffusion import save_tiny_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    size = args.size or (256 if cuda else 64)
    folder = save_tiny_pipeline(Path(tempfile.mkdtemp(prefix="wimmel-tiers-")) / "sd",
                                channels=tuple(args.channels))
    model = DiffusionModel("tiny-sd", str(folder))
    request = Request("a photo of an astronaut riding a horse on mars", steps=args.steps, guidance=7.0,
                      width=size, height=size, seed=1)
    warm = dataclasses.replace(request, steps=1)

    tiers = list(mt.ladder(device, "sdpa"))
    xformers_ok, xformers_why = mt.xformers_status(device)
    if cuda and xformers_ok:
        tiers += [t for t in mt.ladder(device, "xformers")]
    if not cuda:
        # The offload machinery with the CPU as the onload device: no saving, but it runs.
        tiers += [mt.Tier("model_offload", device="cpu"), mt.Tier("group_offload", device="cpu")]

    print(f"device {device}, torch {torch.__version__}, image {size}x{size}, {args.steps} steps, "
          f"UNet channels {tuple(args.channels)}; {xformers_why}", flush=True)
    rows, reference = [], None
    for tier in tiers:
        row = {"tier": tier.label}
        try:
            _free(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            started = time.perf_counter()
            pipe = load(model, device, tier=tier, group_stream=args.group_stream)
            _sync(device)
            row["load_s"] = round(time.perf_counter() - started, 3)
            if cuda:
                row["resident_MiB"] = round((torch.cuda.memory_allocated(device) - before) / MiB, 2)
                row["load_peak_MiB"] = round(torch.cuda.max_memory_allocated(device) / MiB, 2)
            pipe.generate("txt2img", warm)  # kernels, allocator and caches warm
            images, step_s, call_s, peak = _timed_call(pipe, device, request, METER)
            row.update(step_s=round(step_s, 4), call_s=round(call_s, 3), peak_MiB=round(peak / MiB, 2))
            pixels = np.asarray(images[0], np.int16)
            if reference is None and tier.placement == "full" and not tier.vae_tiling:
                reference = pixels
            if reference is not None:
                row["max_diff_vs_full"] = int(np.abs(pixels - reference).max())
            pipe.close()
            del pipe, images
        except Exception as exc:  # one tier failing must not hide the others
            row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
        rows.append(row)
        print(json.dumps(row), flush=True)

    # The degrade path: one pipeline, set_tier one rung down at a time, as an OOM would; then back
    # up rung by rung, as requests planned with memory back do.
    walk = []
    try:
        _free(device)
        pipe = load(model, device, tier=mt.ladder(device)[0], group_stream=args.group_stream)
        down = mt.ladder(device)
        for tier in down + down[-2::-1]:
            step = {"tier": tier.label}
            try:
                started = time.perf_counter()
                pipe.set_tier(tier)
                _sync(device)
                step["set_tier_s"] = round(time.perf_counter() - started, 4)
                if cuda:
                    step["resident_MiB"] = round(torch.cuda.memory_allocated(device) / MiB, 2)
                pixels = np.asarray(pipe.generate("txt2img", request)[0], np.int16)
                if reference is not None:
                    step["max_diff_vs_full"] = int(np.abs(pixels - reference).max())
            except Exception as exc:
                step["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            walk.append(step)
            print("walk", json.dumps(step), flush=True)
        pipe.close()
    except Exception as exc:
        walk.append({"error": f"{type(exc).__name__}: {exc}"})

    import diffusers

    print(json.dumps({"device": device, "name": torch.cuda.get_device_name(device) if cuda else "cpu",
                      "torch": torch.__version__, "diffusers": diffusers.__version__, "size": size,
                      "steps": args.steps, "channels": list(args.channels), "xformers": xformers_why,
                      "tiers": rows, "walk": walk}))


if __name__ == "__main__":
    main()
