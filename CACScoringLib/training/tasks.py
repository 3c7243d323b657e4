"""What a training run learns: items per epoch, the network, a batch's inputs/targets and validation.

The engine (engine.py) is the same loop for every task; a task supplies the parts that differ.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice
from torch import nn

from ..errors import InputError
from ..labels import ARTERY_BY_ID
from ..models.networks import context_batch, context_padded
from .data import NUM_CLASSES, Case, slice_items, train_transforms, volume_items, window
from .losses import build_loss


def segmentation_model_config(config: dict, task: str = "calcium") -> dict:
    """The package's model config (models.make_config) for this training config; patch sizes checked."""
    from ..models.networks import make_config, size_divisor

    model, data = config["model"], config["data"]
    model_config = make_config(
        network=model["network"],
        spatial_dims=int(model["spatial_dims"]),
        patch_size=tuple(int(p) for p in data["patch_size"]),
        hu_window=tuple(float(v) for v in data["hu_window"]),
        inplane_spacing_mm=model["inplane_spacing_mm"],
        slice_spacing_mm=model["slice_spacing_mm"],
        task=task,
        context_slices=int(model.get("context_slices", 1)),
        **model["kwargs"],
    )
    divisor = size_divisor(model_config)
    if any(p % d for p, d in zip(model_config["preprocessing"]["patch_size"], divisor, strict=True)):
        raise InputError(f"data.patch_size {data['patch_size']} must be a multiple of {divisor} for {model['network']}")
    return model_config


class SegmentationTask:
    """Per-artery calcium segmentation, 2D (axial slices) or 3D (patches), as `model.spatial_dims` says."""

    metric_name = "val_dice"
    model_task = "calcium"  # the model package's task (models.networks.TASKS)
    n_classes = NUM_CLASSES
    class_names = ARTERY_BY_ID  # foreground label id -> name in the per-class Dice
    per_class_key = "val_dice_per_artery"

    def __init__(self, config: dict, train_cases: list[Case], val_cases: list[Case]):
        self.config = config
        self.model_config = segmentation_model_config(config, self.model_task)
        self.spatial_dims = self.model_config["spatial_dims"]
        if self.spatial_dims == 2 and self.model_config["in_channels"] > 1:
            # A context model learned neighbours this far apart; inference warns on CTs whose slices are not.
            spacing = float(np.median([case.spacing[2] for case in train_cases]))
            self.model_config["preprocessing"]["slice_spacing_mm"] = spacing
        for case in (*train_cases, *val_cases):
            if case.labels is None:
                raise InputError(f"case {case.id} has no label map; segmentation training needs labels for every case")
        self.train_cases, self.val_cases = train_cases, val_cases
        self.transforms = train_transforms(config, self.spatial_dims, self.n_classes)
        self.window = window(config)
        self.patch = tuple(int(p) for p in config["data"]["patch_size"])

    def build_loss(self) -> nn.Module:
        return build_loss(self.config["loss"])

    def build_model(self) -> nn.Module:
        from ..models.networks import build_network

        return build_network(self.model_config)

    def epoch_items(self, rng: np.random.Generator) -> list[dict]:
        data = self.config["data"]
        hard = float(data["hard_negative_fraction"]) > 0
        if self.spatial_dims == 2:
            return slice_items(
                self.train_cases,
                float(data["negative_slice_ratio"]),
                rng,
                hard,
                data["artery_slice_repeats"],
                self.model_config["in_channels"],
                hard and bool(data["hard_negative_slices"]),
            )
        return volume_items(self.train_cases, hard)

    @staticmethod
    def batch(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"].to(device).float(), batch["label"].to(device).round().long()

    def predict_volume(self, model: nn.Module, image_hu: np.ndarray, device: torch.device) -> torch.Tensor:
        """Logits (C, z, y, x) for a whole HU volume: slice batches in 2D, overlapping patches in 3D."""
        image = torch.as_tensor(self.window(image_hu), dtype=torch.float32)
        batch_size = int(self.config["train"]["batch_size"])
        if self.spatial_dims == 3:
            return sliding_window_inference(
                image[None, None].to(device), self.patch, batch_size, model, overlap=0.25, mode="gaussian"
            )[0]
        context = self.model_config["in_channels"]
        padded = context_padded(np.asarray(image), context)
        slices = []
        for z in range(0, image.shape[0], batch_size):
            x = torch.from_numpy(context_batch(padded, z, min(z + batch_size, image.shape[0]), context)).to(device)
            slices.append(sliding_window_inference(x, self.patch, batch_size, model, mode="gaussian"))
        return torch.cat(slices).movedim(0, 1)

    @staticmethod
    def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
        """Labels (z, y, x) from logits (C, z, y, x) by the inference pipeline's rule."""
        from ..inference.pipeline import calcium_labels

        return calcium_labels(logits.softmax(0), dim=0)

    @torch.no_grad()
    def validate(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> dict:
        """Mean loss and Dice over the validation cases; Dice per artery (1.0 where both are empty)."""
        losses, dices = [], []
        for case in self.val_cases:
            logits = self.predict_volume(model, case.image, device).float()
            label = torch.as_tensor(case.labels, dtype=torch.long, device=device)[None, None]
            losses.append(float(loss_fn(logits[None], label)))
            pred = F.one_hot(self.predicted_labels(logits), self.n_classes).movedim(-1, 0)[None]
            truth = F.one_hot(label[0, 0], self.n_classes).movedim(-1, 0)[None]
            dices.append(compute_dice(pred, truth, include_background=False, ignore_empty=False)[0].cpu().numpy())
        per_class = np.mean(dices, axis=0)
        return {
            "val_loss": float(np.mean(losses)),
            "val_dice": float(per_class.mean()),
            self.per_class_key: {self.class_names[i + 1]: float(d) for i, d in enumerate(per_class)},
        }


class HeartRoiTask(SegmentationTask):
    """Cascade stage 1 (seed 001): heart vs background on low-resolution slices; the case's heart mask is the label."""

    model_task = "heart_roi"
    n_classes = 2
    class_names = {1: "heart"}
    per_class_key = "val_dice_per_class"

    def __init__(self, config: dict, train_cases: list[Case], val_cases: list[Case]):
        for case in (*train_cases, *val_cases):
            if case.heart_mask is None:
                raise InputError(f"case {case.id} has no heart mask; heart_roi training needs one for every case")
        super().__init__(
            config,
            [replace(c, labels=c.heart_mask) for c in train_cases],
            [replace(c, labels=c.heart_mask) for c in val_cases],
        )


def build_task(config: dict, train_cases: list[Case], val_cases: list[Case]):
    task = config["task"]
    if task == "heart_roi":
        return HeartRoiTask(config, train_cases, val_cases)
    if task in ("slice_classification", "fp_classifier"):
        from .classification import FalsePositiveTask, SliceClassificationTask

        task_class = SliceClassificationTask if task == "slice_classification" else FalsePositiveTask
        return task_class(config, train_cases, val_cases)
    if task == "lesion_classifier":
        from .lesion_classifier import LesionClassifierTask

        return LesionClassifierTask(config, train_cases, val_cases)
    if task == "vessel_regression":
        from .regression import VesselRegressionTask

        return VesselRegressionTask(config, train_cases, val_cases)
    return SegmentationTask(config, train_cases, val_cases)
