"""What a training run learns: items per epoch, the network, a batch's inputs/targets and validation.

The engine (engine.py) is the same loop for every task; a task supplies the parts that differ.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice
from torch import nn

from ..errors import InputError
from ..labels import ARTERY_BY_ID
from .data import NUM_CLASSES, Case, slice_items, train_transforms, volume_items, window


def segmentation_model_config(config: dict) -> dict:
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
        **model["kwargs"],
    )
    divisor = size_divisor(model_config)
    if any(p % d for p, d in zip(model_config["preprocessing"]["patch_size"], divisor, strict=True)):
        raise InputError(f"data.patch_size {data['patch_size']} must be a multiple of {divisor} for {model['network']}")
    return model_config


class SegmentationTask:
    """Per-artery calcium segmentation, 2D (axial slices) or 3D (patches), as `model.spatial_dims` says."""

    metric_name = "val_dice"

    def __init__(self, config: dict, train_cases: list[Case], val_cases: list[Case]):
        self.config = config
        self.model_config = segmentation_model_config(config)
        self.spatial_dims = self.model_config["spatial_dims"]
        for case in (*train_cases, *val_cases):
            if case.labels is None:
                raise InputError(f"case {case.id} has no label map; segmentation training needs labels for every case")
        self.train_cases, self.val_cases = train_cases, val_cases
        self.transforms = train_transforms(config, self.spatial_dims)
        self.window = window(config)
        self.patch = tuple(int(p) for p in config["data"]["patch_size"])

    def build_model(self) -> nn.Module:
        from ..models.networks import build_network

        return build_network(self.model_config)

    def epoch_items(self, rng: np.random.Generator) -> list[dict]:
        if self.spatial_dims == 2:
            return slice_items(self.train_cases, float(self.config["data"]["negative_slice_ratio"]), rng)
        return volume_items(self.train_cases)

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
        slices = [
            sliding_window_inference(image[z : z + batch_size, None].to(device), self.patch, batch_size, model, mode="gaussian")
            for z in range(0, image.shape[0], batch_size)
        ]
        return torch.cat(slices).movedim(0, 1)

    @torch.no_grad()
    def validate(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> dict:
        """Mean loss and Dice over the validation cases; Dice per artery (1.0 where both are empty)."""
        losses, dices = [], []
        for case in self.val_cases:
            logits = self.predict_volume(model, case.image, device).float()
            label = torch.as_tensor(case.labels, dtype=torch.long, device=device)[None, None]
            losses.append(float(loss_fn(logits[None], label)))
            pred = F.one_hot(logits.argmax(0), NUM_CLASSES).movedim(-1, 0)[None]
            truth = F.one_hot(label[0, 0], NUM_CLASSES).movedim(-1, 0)[None]
            dices.append(compute_dice(pred, truth, include_background=False, ignore_empty=False)[0].cpu().numpy())
        per_class = np.mean(dices, axis=0)
        return {
            "val_loss": float(np.mean(losses)),
            "val_dice": float(per_class.mean()),
            "val_dice_per_artery": {ARTERY_BY_ID[i + 1]: float(d) for i, d in enumerate(per_class)},
        }


def build_task(config: dict, train_cases: list[Case], val_cases: list[Case]):
    return SegmentationTask(config, train_cases, val_cases)
