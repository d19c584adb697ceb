"""python -m bench SCENARIO [--json] [--budget cpu=4GiB]: run one scenario; the last line of output
is its JSON. `python -m bench all` runs issue 7's scenarios and `load`, each in its own process,
and regenerates docs/benchmarks.md; `python -m bench report` redraws that page from the last run."""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from . import capabilities, compile, face_detectors, faces, grouping, networks, video  # noqa: E402
from . import estimate, gpu, interactive, load, oom_stress, overhead, report, startup, swap  # noqa: E402
from . import cluster, drift, hub_footprints, mmap_threshold, onnx_arena, python_allocator, quality  # noqa: E402
from . import quality_faces, quality_ocr, quality_pitch, quality_speech  # noqa: E402

SCENARIOS = {"capabilities": capabilities.run, "compile": compile.run, "faces": faces.run, "grouping": grouping.run, "video": video.run}
# Issue 7's scenarios and issue 9's load test ('video' stays as the old name of video-memory).
SCENARIOS.update({"swap": swap.run, "interactive": interactive.run, "video-memory": video.run,
                  "estimate": estimate.run, "overhead": overhead.run, "startup": startup.run,
                  "oom-stress": oom_stress.run, "load": load.run})
# Issue 14: one run on a CUDA machine (not part of 'all': it exits at once without a GPU).
SCENARIOS["gpu"] = gpu.run
# Issue 15: every network of the catalog, each in its own process.
SCENARIOS["networks"] = networks.run
# Issue 15: the face detector chosen by numbers (MTCNN against BlazeFace short and full range).
SCENARIOS["face-detectors"] = face_detectors.run
# Issue 16: memory drift over 200 mixed runs (evicting, all resident, evicting with a trim after each run).
SCENARIOS["drift"] = drift.run
# Issue 19: quality on real recordings, photos and videos (docs/quality.md; not part of 'all',
# whose page is docs/benchmarks.md): each capability alone, or all of them as 'quality'.
QUALITY = {"quality-voices": quality.run, "quality-speech": quality_speech.run, "quality-faces": quality_faces.run,
           "quality-ocr": quality_ocr.run, "quality-pitch": quality_pitch.run}
SCENARIOS.update(QUALITY)
# Issue 20: the hub networks' footprints on random-weight graphs of their real size.
SCENARIOS["hub-footprints"] = hub_footprints.run


def quality_all(verbose: bool = True) -> dict:
    return {name.removeprefix("quality-"): run(verbose=verbose) for name, run in QUALITY.items()}


SCENARIOS["quality"] = quality_all
# Issue 17: long jobs on Ray worker actors, routed by model, one worker killed.
SCENARIOS["cluster"] = cluster.run
# Issue 16: what ONNX Runtime's CPU arena keeps between runs, and what shrinking it costs.
SCENARIOS["onnx-arena"] = onnx_arena.run
# Issue 16: glibc's mmap threshold fixed (the engine's default) against its moving one: speed and the floor.
SCENARIOS["mmap-threshold"] = mmap_threshold.run
# Issue 16: Python's objects on glibc's malloc against pymalloc (the app's): speed and the floor.
SCENARIOS["python-allocator"] = python_allocator.run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("scenario", choices=sorted(SCENARIOS) + ["all", "report"])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--budget", help="engine budget for the scenarios that start the app (load, "
                                         "interactive), e.g. cpu=4GiB")
    parser.add_argument("--only", help="with all: a comma-separated subset of its scenarios")
    args = parser.parse_args()
    if args.scenario in ("all", "report"):
        only = args.only.split(",") if args.only else None
        result = report.run_all(budget=args.budget, only=only) if args.scenario == "all" else report.redraw()
        print(json.dumps(result))
        return
    run = SCENARIOS[args.scenario]
    kwargs = {"budget": args.budget} if args.budget and "budget" in inspect.signature(run).parameters else {}
    result = run(verbose=not args.json, **kwargs)
    print(json.dumps(result))


main()
