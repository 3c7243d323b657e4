#!/usr/bin/env bash
# Create .venv and install everything CACScoring needs (idempotent; reinstalls when requirements change).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.cacscoring-requirements
wanted=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  log=.venv/setup.log
  echo "setting up .venv (log: $log)"
  {
    .venv/bin/python -m pip install --upgrade pip
    # torch first: a bare torch requirement would pull a multi-GB CUDA build.
    .venv/bin/python -m pip install torch==2.13.0
    .venv/bin/python -m pip install -r requirements-dev.txt
    .venv/bin/python -m pip install --no-deps --no-build-isolation -e .
  } >"$log" 2>&1 || { tail -n 30 "$log"; echo "setup failed: see $log" >&2; exit 1; }
  echo "$wanted" > "$stamp"
fi
