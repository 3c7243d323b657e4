#!/usr/bin/env bash
# Set up, generate a synthetic thorax phantom (calcium in all four arteries, aortic calcium, bone) and
# score it with its reference labels. Mass uses the phantom's HU model: 1 HU per mg HA/cm³ above water.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-demo-output}
.venv/bin/cacscoring phantom "$out" --kind thorax --seed 5 --format both
.venv/bin/cacscoring score "$out/thorax_dicom" --labels "$out/thorax_labels.nii.gz" \
  --mass-calibration-factor 1.0 --json "$out/scores.json" --csv "$out/scores.csv" --lesions-csv "$out/lesions.csv"
