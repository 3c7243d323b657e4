"""Training configuration: YAML on top of defaults, plus `key.sub=value` command-line overrides.

Every key must exist in DEFAULTS (a typo would otherwise silently train with a default); only the
sections in FREE_FORM take arbitrary keys because their owners validate them (`model.kwargs` goes to the
MONAI network constructor, `data.phantom.options` to `make_thorax_phantom`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from ..errors import InputError
from ..labels import LABEL_ID
from ..models.networks import MAX_PATCH_SIZE, is_finite_number, is_whole_number
from ..models.registry import PLAIN_NAME

DEFAULTS: dict = {
    # segmentation (per-artery calcium label maps), slice_classification (seed 003), vessel_regression
    # (seed 004), heart_roi and fp_classifier (the cascade's first and third stages, seed 001),
    # lesion_classifier (decides each calcium candidate on top of a trained segmentation model)
    "task": "segmentation",
    "seed": 0,
    "output_dir": "runs/model",
    # Becomes the package's model config through models.make_config (network, kwargs for MONAI).
    "model": {
        "network": "UNet",  # UNet | DynUNet | FlexibleUNet
        "spatial_dims": 2,
        "inplane_spacing_mm": 0.8,  # cases are resampled to this before training, as inference does
        "slice_spacing_mm": None,  # 3D: resample slices too (None: keep)
        "context_slices": 1,  # 2D: odd number of consecutive slices the network sees, segmenting the middle one
        "kwargs": {},  # MONAI constructor arguments; empty: the models module's defaults
    },
    "data": {
        "source": "manifest",  # manifest | phantom
        "manifest": None,
        "phantom": {
            "train_seeds": [0, 8],  # range(start, stop)
            "val_seeds": [1000, 1002],
            "shape": [32, 128, 128],  # (z, y, x); null with options.acquisition (it sets the grid)
            "options": {},  # make_thorax_phantom keywords, e.g. {preset: realchest} (docs/phantoms.md)
        },
        "hu_window": [-200.0, 1300.0],  # scaled to [0, 1] and clipped
        "patch_size": [96, 96],  # array order: (y, x) in 2D, (z, y, x) in 3D
        "samples_per_image": 2,
        "sampling": "posneg",  # posneg (RandCropByPosNegLabel) | classes (RandCropByLabelClasses)
        "pos_fraction": 0.5,  # posneg: share of crops centred on calcium
        "hard_negative_fraction": 0.0,  # posneg: share centred on known look-alikes (phantoms: aortic calcium)
        "class_ratios": None,  # classes: one weight per label id 0..4 (None: equal)
        "negative_slice_ratio": 1.0,  # 2D: calcium-free slices drawn per calcium slice each epoch
        "hard_negative_slices": False,  # 2D, with hard negatives: every calcium-free slice holding a look-alike is drawn
        "artery_slice_repeats": {},  # 2D: artery -> times a slice with its calcium appears per epoch (rare arteries)
        "num_workers": 0,
        "heart_masks": None,  # heart_roi from a manifest: folder of <case id>.nii.gz masks (0/1) on the case grids
        "candidate_threshold_hu": 130.0,  # fp_classifier, lesion_classifier: candidates are connected voxels at or above this
        "segmenter": None,  # lesion_classifier: the calcium model package (folder or registry id) it decides for
        "max_candidate_mm3": 1500.0,  # lesion_classifier: larger candidates are left to the segmenter's vote
        "min_candidate_voxels": 3,  # lesion_classifier: smaller candidates (noise specks) are left to the vote
        "missed_positive_repeats": 1,  # lesion_classifier: times per epoch a coronary candidate the vote dropped is listed
        "volume_size": [32, 128, 128],  # vessel_regression: slices kept around the centre, in-plane size
        "cam_slices": 4,  # slice_classification: validation slices written as class activation map overlays
    },
    "augment": {
        "flip_prob": 0.5,
        "rotate_prob": 0.2,
        "rotate_deg": 15.0,
        "shift_prob": 0.3,
        "shift_offset": 0.05,  # in windowed [0, 1] units
        "noise_prob": 0.2,
        "noise_std": 0.01,
        "smooth_prob": 0.1,
        "smooth_sigma": [0.25, 0.75],  # voxels
    },
    "split": {
        "folds": 5,  # patient-wise k-fold; 1 = hold out val_fraction of the patients
        "fold": 0,
        "val_fraction": 0.2,
    },
    "loss": {
        "name": "dice_ce",  # tversky | dice | dice_ce | dice_focal | focal | bce
        "alpha": 0.5,  # Tversky, MONAI semantics: weight of false positives
        "beta": 0.5,  # Tversky: weight of false negatives
        "gamma": 2.0,  # focal
        "include_background": False,
        "batch": False,  # Dice-type losses: one Dice over the whole batch (nnU-Net's batch Dice), not per item
    },
    "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-5, "momentum": 0.99},
    "scheduler": {"name": "plateau", "factor": 0.5, "patience": 5, "power": 0.9},
    "train": {
        "epochs": 50,
        "batch_size": 8,
        "val_every": 1,
        "early_stopping_patience": 10,  # validations without improvement; 0 = off
        "amp": True,  # used on CUDA only
        "device": "auto",  # auto | cpu | cuda
        "progress": True,
        "max_steps_per_epoch": None,
        "init_from": None,  # model package folder or registry id whose weights start the run (fine-tuning)
    },
    "export": {
        "package": True,
        "model_id": None,  # default: output_dir's name
        "version": "0.1.0",
        "title": None,
        "training_data": None,  # free text for the model card; default describes the data source
    },
}

FREE_FORM = {"model.kwargs", "data.phantom.options", "data.artery_slice_repeats"}

CHOICES = {
    "task": ("segmentation", "slice_classification", "vessel_regression", "heart_roi", "fp_classifier", "lesion_classifier"),
    "data.source": ("manifest", "phantom"),
    "data.sampling": ("posneg", "classes"),
    "loss.name": ("tversky", "dice", "dice_ce", "dice_focal", "focal", "bce", "ce", "mse"),
    "optim.name": ("adamw", "sgd"),
    "scheduler.name": ("plateau", "poly", "none"),
    "train.device": ("auto", "cpu", "cuda"),
    "model.spatial_dims": (2, 3),
}


def _merge(base: dict, update: dict, prefix: str, unknown: list[str]) -> None:
    for key, value in update.items():
        path = f"{prefix}{key}"
        if path in FREE_FORM:
            if not isinstance(value, dict):
                raise InputError(f"config key {path} must be a mapping; fix the config")
            base[key] = {**base.get(key, {}), **copy.deepcopy(value)}
        elif key not in base:
            unknown.append(path)
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise InputError(f"config key {path} must be a mapping; fix the config")
            _merge(base[key], value, f"{path}.", unknown)
        else:
            base[key] = value


def merge_config(base: dict, update: dict) -> dict:
    """`update` laid over a copy of `base`; unknown keys raise one InputError naming all of them."""
    merged = copy.deepcopy(base)
    unknown: list[str] = []
    _merge(merged, update, "", unknown)
    if unknown:
        raise InputError(f"unknown config key(s): {', '.join(unknown)}; check the spelling against configs/")
    return merged


def parse_overrides(overrides: list[str]) -> dict:
    """`a.b=value` strings to a nested mapping; values typed by YAML (`0.9`, `[1, 2]`, `null`, `true`)."""
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"override {item!r} is not key=value; write e.g. loss.alpha=0.9")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise InputError(f"override {item!r} has an unreadable value ({error.__class__.__name__})") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"override {item!r} conflicts with another override of {part}")
        node[parts[-1]] = value
    return nested


# Losses that fit each task's outputs (segmentation maps, class logits, four regressed scores).
TASK_LOSSES = {
    "segmentation": ("tversky", "dice", "dice_ce", "dice_focal", "focal", "bce"),
    "heart_roi": ("tversky", "dice", "dice_ce", "dice_focal", "focal", "bce"),
    "slice_classification": ("ce", "focal"),
    "fp_classifier": ("ce", "focal"),
    "lesion_classifier": ("ce", "focal"),
    "vessel_regression": ("mse",),
}


def _is_count(value) -> bool:
    """A whole number >= 1 as YAML gives it (YAML's true/false are Python ints too)."""
    return is_whole_number(value) and value >= 1


# (test, what is expected) per kind of value; the message names the key, the value and the expectation.
def _numbers(count: int, test, what: str) -> tuple:
    return (lambda v: isinstance(v, list) and len(v) == count and all(map(test, v)), f"a list of {count} {what}")


def _optional(kind: tuple) -> tuple:
    return (lambda v: v is None or kind[0](v), f"{kind[1]} or null")


COUNT = (_is_count, "a whole number >= 1")
NATURAL = (lambda v: is_whole_number(v) and v >= 0, "a whole number >= 0")
NUMBER = (is_finite_number, "a number")
POSITIVE = (lambda v: is_finite_number(v) and v > 0, "a number > 0")
NON_NEGATIVE = (lambda v: is_finite_number(v) and v >= 0, "a number >= 0")
PROBABILITY = (lambda v: is_finite_number(v) and 0 <= v <= 1, "a number from 0 to 1")
FLAG = (lambda v: isinstance(v, bool), "true or false")
TEXT = (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty text")
NAME = (lambda v: isinstance(v, str) and bool(PLAIN_NAME.fullmatch(v)), "a plain name of letters, digits, '.', '_', '+', '-' (quote a version: '1.0')")
PATCH = (lambda v: isinstance(v, list) and len(v) in (2, 3) and all(is_whole_number(p) and 1 <= p <= MAX_PATCH_SIZE for p in v),
         f"a list of 2 (y, x) or 3 (z, y, x) whole sizes from 1 to {MAX_PATCH_SIZE}")  # fmt: skip
SEEDS = (lambda v: isinstance(v, list) and len(v) == 2 and all(is_whole_number(p) and p >= 0 for p in v) and v[0] < v[1],
         "[start, stop] whole numbers >= 0 with start < stop")  # fmt: skip

VALUE_KINDS = {
    "seed": NATURAL,
    "output_dir": TEXT,
    "model.network": TEXT,
    "model.inplane_spacing_mm": _optional(POSITIVE),
    "model.slice_spacing_mm": _optional(POSITIVE),
    "data.manifest": _optional(TEXT),
    "data.phantom.train_seeds": SEEDS,
    "data.phantom.val_seeds": SEEDS,
    "data.phantom.shape": _optional(_numbers(3, COUNT[0], "whole sizes >= 1 (z, y, x)")),  # null: the acquisition sets the grid
    "data.hu_window": _numbers(2, NUMBER[0], "numbers [low, high]"),
    "data.patch_size": PATCH,
    "data.samples_per_image": COUNT,
    "data.pos_fraction": PROBABILITY,
    "data.hard_negative_fraction": PROBABILITY,
    "data.class_ratios": _optional(_numbers(5, NON_NEGATIVE[0], "numbers >= 0, one per label 0..4")),
    "data.negative_slice_ratio": NON_NEGATIVE,
    "data.num_workers": NATURAL,
    "data.heart_masks": _optional(TEXT),
    "data.candidate_threshold_hu": NUMBER,
    "data.segmenter": _optional(TEXT),
    "data.max_candidate_mm3": POSITIVE,
    "data.min_candidate_voxels": COUNT,
    "data.volume_size": _numbers(3, COUNT[0], "whole sizes >= 1"),
    "data.cam_slices": NATURAL,
    "augment.flip_prob": PROBABILITY,
    "augment.rotate_prob": PROBABILITY,
    "augment.rotate_deg": NON_NEGATIVE,
    "augment.shift_prob": PROBABILITY,
    "augment.shift_offset": NON_NEGATIVE,
    "augment.noise_prob": PROBABILITY,
    "augment.noise_std": NON_NEGATIVE,
    "augment.smooth_prob": PROBABILITY,
    "augment.smooth_sigma": _numbers(2, NON_NEGATIVE[0], "numbers >= 0 (voxels)"),
    "split.folds": COUNT,
    "split.fold": NATURAL,
    "split.val_fraction": (lambda v: is_finite_number(v) and 0 < v < 1, "a number between 0 and 1"),
    "loss.alpha": NON_NEGATIVE,
    "loss.beta": NON_NEGATIVE,
    "loss.gamma": NON_NEGATIVE,
    "loss.include_background": FLAG,
    "loss.batch": FLAG,
    "optim.lr": NON_NEGATIVE,  # 0 keeps the weights (an evaluation-only run)
    "optim.weight_decay": NON_NEGATIVE,
    "optim.momentum": (lambda v: is_finite_number(v) and 0 <= v < 1, "a number from 0 to below 1"),
    "scheduler.factor": (lambda v: is_finite_number(v) and 0 < v < 1, "a number between 0 and 1"),
    "scheduler.patience": NATURAL,
    "scheduler.power": NON_NEGATIVE,
    "train.epochs": COUNT,
    "train.batch_size": COUNT,
    "train.val_every": COUNT,
    "train.early_stopping_patience": NATURAL,
    "train.amp": FLAG,
    "train.progress": FLAG,
    "train.max_steps_per_epoch": _optional(COUNT),
    "export.package": FLAG,
    "export.model_id": _optional(NAME),
    "export.version": NAME,
    "export.title": _optional(TEXT),
    "export.training_data": _optional(TEXT),
}


def _check_values(config: dict) -> None:
    """Every value of VALUE_KINDS has its type and range, before anything runs."""
    for path, (test, expected) in VALUE_KINDS.items():
        node = config
        for part in path.split("."):
            node = node[part]
        if not test(node):
            raise InputError(f"config {path}={node!r} must be {expected}; fix the config or the override")
    output = Path(config["output_dir"]).absolute()
    existing = next(folder for folder in (output, *output.parents) if folder.exists())
    if not existing.is_dir():
        raise InputError(f"config output_dir={config['output_dir']!r}: {existing} is an existing file; give a folder")


def _check_choices(config: dict) -> None:
    for path, allowed in CHOICES.items():
        node = config
        for part in path.split("."):
            node = node[part]
        if node not in allowed:
            raise InputError(f"config {path}={node!r} is not one of {', '.join(allowed)}")
    losses = TASK_LOSSES[config["task"]]
    if config["loss"]["name"] not in losses:
        raise InputError(f"loss.name={config['loss']['name']} does not fit task {config['task']}; use one of {', '.join(losses)}")
    split = config["split"]
    if int(split["folds"]) < 1 or not 0 <= int(split["fold"]) < int(split["folds"]):
        raise InputError(
            f"split.fold={split['fold']} must lie in 0..folds-1 (folds={split['folds']}); fix the fold index"
        )
    if config["data"]["source"] == "manifest" and not config["data"]["manifest"]:
        raise InputError("data.source is manifest but data.manifest is not set; give data.manifest=PATH")
    for artery, repeats in config["data"]["artery_slice_repeats"].items():
        if artery not in LABEL_ID or not _is_count(repeats):
            raise InputError(
                f"data.artery_slice_repeats {artery}: {repeats!r} is not an artery and a whole number >= 1; "
                "write e.g. {LM: 3}"
            )
    context = config["model"]["context_slices"]
    if not _is_count(context) or context % 2 == 0:
        raise InputError(f"model.context_slices={context!r} must be an odd whole number (1, 3, 5, ...)")
    if context > 1 and int(config["model"]["spatial_dims"]) != 2:
        raise InputError("model.context_slices > 1 is for 2D models; a 3D model sees its neighbours already")
    if not isinstance(config["data"]["hard_negative_slices"], bool):
        raise InputError(f"data.hard_negative_slices={config['data']['hard_negative_slices']!r} must be true or false")
    init_from = config["train"]["init_from"]
    if init_from is not None and not isinstance(init_from, str):
        raise InputError(f"train.init_from={init_from!r} must be a model package folder or a registry id")
    if config["task"] == "lesion_classifier":
        if not config["data"]["segmenter"]:
            raise InputError("lesion_classifier needs data.segmenter=PACKAGE, the calcium model whose candidates it decides")
        repeats = config["data"]["missed_positive_repeats"]
        if not _is_count(repeats):
            raise InputError(f"data.missed_positive_repeats={repeats!r} must be a whole number >= 1 (1: no repeats)")
        if float(config["augment"]["flip_prob"]) > 0:
            raise InputError("lesion_classifier: augment.flip_prob must be 0 (a mirrored patch swaps left and right arteries)")
    low, high = config["data"]["hu_window"]
    if not float(low) < float(high):
        raise InputError(f"data.hu_window {low}..{high} is empty; give [low, high] with low < high")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Defaults <- YAML file <- overrides, checked (relative paths are taken from the working directory)."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"config file {path} not found; give a YAML file such as configs/unet2d_tversky.yaml")
        try:
            from_file = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise InputError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(from_file, dict):
            raise InputError(f"config file {path} must hold a mapping of sections")
        config = merge_config(config, from_file)
    config = merge_config(config, parse_overrides(overrides or []))
    _check_values(config)
    _check_choices(config)
    return config
