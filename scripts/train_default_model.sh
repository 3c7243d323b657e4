#!/usr/bin/env bash
# Reproduce the shipped default model: train it on phantoms (configs/default_phantom.yaml, about 35 min
# on 2 CPU cores), evaluate it on held-out phantoms and install it as Resources/models/cac-unet2d-phantom,
# the registry default. Extra arguments go to `cacscoring train` as overrides (e.g. train.device=cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m CACScoringLib train configs/default_phantom.yaml output_dir=runs/default_phantom "$@"
.venv/bin/python scripts/evaluate_default_model.py runs/default_phantom/package --ship --register-default
