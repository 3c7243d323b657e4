"""Seed 001's cascade as one model package: heart ROI UNet -> calcium FlexibleUNet -> false-positive classifier.

Each stage is trained on its own (`cacscoring train` with configs/cascade_heart_roi.yaml,
configs/cascade_effb0.yaml and configs/cascade_fp_classifier.yaml); this joins the three exported packages:

    python -m CACScoringLib.training.cascade runs/cascade_effb0/package runs/cascade_heart_roi/package \\
        runs/cascade_fp_classifier/package runs/cascade_model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError


def assemble_cascade(calcium: str | Path, heart_roi: str | Path, fp_classifier: str | Path, output: str | Path) -> Path:
    """A calcium package with the heart ROI and false-positive packages as its components; metadata of the
    calcium stage kept, each stage's model card summarised under `cascade`."""
    from ..models.package import load_package, save_package

    stages = {"calcium": calcium, "heart_roi": heart_roi, "fp_classifier": fp_classifier}
    loaded = {name: load_package(folder, "cpu") for name, folder in stages.items()}
    for name, package in loaded.items():
        if package.config["task"] != name:
            raise InputError(f"{stages[name]} is a {package.config['task']} model, not the {name} stage; check the argument order")
    metadata = {
        key: value
        for key, value in loaded["calcium"].metadata.items()
        if key not in ("monai_version", "torch_version", "cacscoring_version", "created")
    }
    metadata["id"] = Path(output).name
    metadata["cascade"] = {
        name: {"source": str(stages[name]), "training_data": p.metadata.get("training_data"), "accuracy": p.metadata.get("accuracy")}
        for name, p in loaded.items()
    }
    components = {name: (loaded[name].network, loaded[name].config) for name in ("heart_roi", "fp_classifier")}
    return save_package(output, loaded["calcium"].network, loaded["calcium"].config, metadata, components)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Join trained cascade stages into one model package.")
    parser.add_argument("calcium", type=Path, help="package of the calcium stage (task calcium)")
    parser.add_argument("heart_roi", type=Path, help="package of the heart ROI stage (task heart_roi)")
    parser.add_argument("fp_classifier", type=Path, help="package of the false-positive classifier (task fp_classifier)")
    parser.add_argument("output", type=Path, help="folder for the joined package")
    args = parser.parse_args(argv)
    try:
        folder = assemble_cascade(args.calcium, args.heart_roi, args.fp_classifier, args.output)
    except InputError as error:
        print(f"cascade: error: {error}", file=sys.stderr)
        return 2
    print(f"cascade package: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
