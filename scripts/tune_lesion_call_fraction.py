"""Choose a model's lesion_call_fraction on tuning phantoms (never on the held-out evaluation phantoms).

    python scripts/tune_lesion_call_fraction.py runs/default_phantom/package [--seeds 2000 2120]

The pipeline keeps a candidate lesion (3D connected voxels >= 130 HU) when the network called at least this
share of its voxels calcium. Each tuning phantom is segmented once; every fraction of the grid is then
applied to the same probabilities and compared with the phantom's labels. The chosen fraction maximises the
lowest of the three target metrics (risk-category kappa, per-artery Agatston ICC, lesion F1), so no target
is traded away for another. Prints the table; writes it with the choice to --output (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from CACScoringLib.cli.phantom import add_clearance_arguments, clearance_options  # noqa: E402
from CACScoringLib.evaluation.lesions import ALL_ARTERIES  # noqa: E402
from CACScoringLib.evaluation.report import evaluate_case, summarize  # noqa: E402
from CACScoringLib.inference import segment  # noqa: E402
from CACScoringLib.inference.pipeline import calcium_labels, lesion_labels  # noqa: E402
from CACScoringLib.labels import ARTERIES  # noqa: E402
from CACScoringLib.models import load_package  # noqa: E402
from CACScoringLib.phantom import make_thorax_phantom  # noqa: E402

# Disjoint from training (0-239), validation (1000-1005) and held-out (5000-, 6000-, 7000-) seeds. 120, not the 40 used
# up to 1.0.0: on 40 phantoms one or two lesions swing the per-artery ICC, and the fraction they chose
# (0.2 for 1.1.0) scored 0.83 on the 120 against 0.93 at 0.4.
TUNING_SEEDS = (2000, 2120)
FRACTIONS = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--seeds", type=int, nargs=2, default=TUNING_SEEDS, metavar=("START", "STOP"))
    parser.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    parser.add_argument("--output", type=Path, help="JSON with the table and the chosen fraction")
    add_clearance_arguments(parser)
    args = parser.parse_args(argv)
    package = load_package(args.package, "cpu")

    generator_options = clearance_options(args)
    phantoms = []
    for seed in range(*args.seeds):
        phantom = make_thorax_phantom(seed=seed, compute_scores=False, **generator_options)
        seg = segment(phantom.ct, package, device="cpu", return_probabilities=True)
        crop = seg.roi.slices
        calls = np.zeros(phantom.ct.shape, np.uint8)
        calls[crop] = calcium_labels(torch.from_numpy(seg.probabilities[(slice(None), *crop)].astype(np.float32))).numpy()
        phantoms.append((seed, phantom, calls))
        print(f"segmented tuning phantom {seed}", flush=True)

    table = []
    for fraction in args.fractions:
        cases = []
        for seed, phantom, calls in phantoms:
            predicted = lesion_labels(phantom.ct.array, calls, 130.0, fraction)
            cases.append(evaluate_case(f"phantom-{seed}", phantom.ct, phantom.labels, predicted))
        summary = summarize(cases, resamples=20)  # point estimates only; the CIs are not used here
        agatston = summary["agreement"]["agatston"]
        row = {
            "fraction": fraction,
            "risk_kappa_linear": summary["risk_categories"]["kappa_linear"],
            "agatston_icc_per_artery": min(agatston[a]["icc_a1"]["icc"] for a in ARTERIES if a in agatston),
            "lesion_f1": summary["lesions"][ALL_ARTERIES]["f1"],
        }
        row["lowest"] = min(row["risk_kappa_linear"], row["agatston_icc_per_artery"], row["lesion_f1"])
        row["agatston_icc"] = {a: agatston[a]["icc_a1"]["icc"] for a in ARTERIES if a in agatston}
        table.append(row)
        icc = " ".join(f"{a} {v:.3f}" for a, v in row["agatston_icc"].items())
        print(" ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "agatston_icc") + f" (ICC {icc})", flush=True)
    best = max(table, key=lambda r: r["lowest"])
    print(f"chosen lesion_call_fraction: {best['fraction']}")
    if args.output:
        args.output.write_text(
            json.dumps({"seeds": list(args.seeds), "table": table, "chosen": best["fraction"]}, indent=2) + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
