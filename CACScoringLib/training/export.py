"""The model package a training run ends with (models.package.save_package), with an honest model card."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .data import Case


def describe_training_data(config: dict, train_cases: list[Case], val_cases: list[Case]) -> str:
    data = config["data"]
    if data["source"] == "phantom":
        phantom = data["phantom"]
        return (
            f"synthetic thorax phantoms (CACScoringLib.phantom), seeds {phantom['train_seeds'][0]}.."
            f"{phantom['train_seeds'][1] - 1} for training ({len(train_cases)}), "
            f"{phantom['val_seeds'][0]}..{phantom['val_seeds'][1] - 1} for validation ({len(val_cases)}), "
            f"shape {list(phantom['shape'])}; no patient data"
        )
    split = config["split"]
    fold = f"fold {split['fold']} of {split['folds']}" if int(split["folds"]) > 1 else f"{split['val_fraction']:.0%} held out"
    return (
        f"manifest {data['manifest']}: {len(train_cases)} training and {len(val_cases)} validation cases, "
        f"patient-wise split ({fold}, seed {config['seed']})"
    )


def export_package(
    config: dict, model: nn.Module, task, history: list[dict], best_epoch: int, train_cases: list[Case], val_cases: list[Case]
) -> Path:
    """Save the best weights as a package in OUTPUT_DIR/package; validation figures of the best epoch go in."""
    from ..models.package import save_package

    export = config["export"]
    folder = Path(config["output_dir"]) / "package"
    best = next((row for row in history if row["epoch"] == best_epoch), history[-1] if history else {})
    accuracy = {key: value for key, value in best.items() if key.startswith("val_")}
    accuracy.update({"epoch": best.get("epoch"), "measured_on": "validation split of the training run"})
    metadata = {
        "id": export["model_id"] or Path(config["output_dir"]).name,
        "version": export["version"],
        "title": export["title"] or f"{config['model']['network']} {config['model']['spatial_dims']}D ({config['loss']['name']} loss)",
        "training_data": export["training_data"] or describe_training_data(config, train_cases, val_cases),
        "accuracy": accuracy,
        "training": {
            "loss": config["loss"],
            "optim": config["optim"],
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "seed": config["seed"],
        },
    }
    return save_package(folder, model, task.model_config, metadata)
