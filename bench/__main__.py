"""python -m bench SCENARIO [--json]: run one scenario; the last line of output is its JSON."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from . import capabilities, faces, grouping, video  # noqa: E402

SCENARIOS = {"capabilities": capabilities.run, "faces": faces.run, "grouping": grouping.run, "video": video.run}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    result = SCENARIOS[args.scenario](verbose=not args.json)
    print(json.dumps(result))


main()
