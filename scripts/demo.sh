#!/usr/bin/env bash
# Set up, generate the anatomical thorax phantom and score it with its reference labels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-demo-output}
.venv/bin/cacscoring phantom "$out" --kind thorax --seed 0
.venv/bin/cacscoring score "$out/thorax_ct.nii.gz" --labels "$out/thorax_labels.nii.gz" \
  --json "$out/scores.json" --csv "$out/lesions.csv"
