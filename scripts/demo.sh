#!/usr/bin/env bash
# Set up, generate a synthetic thorax phantom (calcium in all four arteries, aortic calcium, bone), score it
# with its reference labels, then let the shipped default model segment the same CT and score that, and say
# per artery whether the two match (the exit status is 1 when they differ).
# Seed 5019: a phantom the default model was never trained, validated or tuned on (seeds 0-239, 1000-1005, 2000-2119, 3000-3879).
# Mass uses the phantom's HU model: 1 HU per mg HA/cm³ above water.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-demo-output}
.venv/bin/cacscoring phantom "$out" --kind thorax --seed 5019 --format both
echo "== reference labels (the phantom's truth) =="
.venv/bin/cacscoring score "$out/thorax_dicom" --labels "$out/thorax_labels.nii.gz" \
  --mass-calibration-factor 1.0 --json "$out/scores.json" --csv "$out/scores.csv" --lesions-csv "$out/lesions.csv"
echo "== segmented by the default model (no labels given) =="
.venv/bin/cacscoring score "$out/thorax_dicom" --mass-calibration-factor 1.0 --save-labels "$out/model_labels.nii.gz" \
  --json "$out/model_scores.json" --csv "$out/model_scores.csv" --lesions-csv "$out/model_lesions.csv"
echo "== the model's scores against the reference, artery by artery =="
.venv/bin/python scripts/compare_scores.py "$out/scores.json" "$out/model_scores.json"
