"""The model package a training run ends with (models.package.save_package), with an honest model card."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..errors import InputError
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
    config: dict,
    model: nn.Module,
    task,
    history: list[dict],
    best_epoch: int,
    train_cases: list[Case],
    val_cases: list[Case],
    origin: dict | None = None,
) -> Path:
    """Save the best weights as a package in OUTPUT_DIR/package; validation figures of the best epoch go in,
    and `origin`, the package a fine-tuning run started from (train.init_from)."""
    from ..models.package import save_package
    from .engine import exported_id

    export = config["export"]
    folder = Path(config["output_dir"]) / "package"
    best = next((row for row in history if row["epoch"] == best_epoch), history[-1] if history else {})
    accuracy = {key: value for key, value in best.items() if key.startswith("val_")}
    accuracy.update({"epoch": best.get("epoch"), "measured_on": "validation split of the training run"})
    metadata = {
        "id": exported_id(config),
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
    if origin:
        metadata["training"]["init_from"] = origin
    if hasattr(task, "save"):  # models outside the inference pipeline's package format
        return task.save(folder, model, metadata)
    return save_package(folder, model, task.model_config, metadata)


def save_task_model(folder: Path, network: nn.Module, network_config: dict, metadata: dict) -> Path:
    """Weights (safetensors), the config that rebuilds the network and the model card, for the slice
    classifier and the vessel regressor, which the segmentation pipeline does not load."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    save_model(network, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(network_config, indent=2) + "\n", encoding="utf-8")
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n", encoding="utf-8")
    return folder


def load_task_model(folder: str | Path) -> tuple[nn.Module, dict]:
    """(network in eval mode, its config) from a folder save_task_model wrote."""
    from safetensors.torch import load_model

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder} holds no config.json; give the package folder of a training run")
    network_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if network_config.get("task") == "slice_classification":
        from .classification import build_slice_classifier as build
    elif network_config.get("task") == "vessel_regression":
        from .regression import build_regressor as build
    else:
        raise InputError(f"{folder} is not a slice classifier or vessel regressor; load pipeline models with load_package")
    network = build(network_config)
    load_model(network, str(folder / "model.safetensors"), strict=True)
    return network.eval(), network_config
