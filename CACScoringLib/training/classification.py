"""Binary classifiers: calcium-containing slices (seed 003) and the cascade's false-positive patch classifier (seed 001).

Seed 003 classified whole axial slices (downsampled to 256 x 256) with Inception V3 / Xception and looked at
class activation maps. MONAI has neither network; its DenseNet121 (trained from scratch, as the paper's best
Inception was) is the deep 2D ImageNet-family CNN it offers, and MONAI's small `Classifier` CNN serves tiny
runs. A slice is positive when any label > 0 lies on it. Class activation maps come from monai.visualize
(Grad-CAM on the last feature layer) and are written as PNG overlays.

Seed 001's third stage looks at a 96 x 96 patch around each calcium candidate and drops what is not coronary
calcium (aortic calcium, bone, noise). The inference pipeline (`_remove_false_positives`) takes each
candidate's centre slice at the classifier's in-plane spacing inside the heart ROI crop, padded with the low
end of the HU window, and expects two logits (false positive, calcium) from the package's `Classifier`.
Training patches are cut the same way from threshold candidates (connected voxels >= 130 HU in the heuristic
heart ROI): positive where a candidate touches a coronary label. The paper cut its patches from stage-2
predictions instead, so its negatives were only the calcium stage's mistakes; here they are every bright
non-coronary structure in the ROI, a superset.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import FocalLoss
from monai.transforms import (
    Compose,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotated,
    RandShiftIntensityd,
    Resize,
    Resized,
    ScaleIntensityRanged,
)
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from torch import nn

from ..errors import InputError
from .data import Case, balanced_indices, window

SLICE_NETWORKS = ("DenseNet121", "Classifier")
CLASSIFIER_DEFAULTS = {"channels": (16, 32, 64, 128), "strides": (2, 2, 2, 2)}
DECISION_THRESHOLD = 0.5


def build_slice_classifier(network_config: dict) -> nn.Module:
    """Two-logit (no calcium, calcium) 2D network from a slice classifier config."""
    from monai.networks.nets import Classifier, DenseNet121

    name, kwargs = network_config["network"], dict(network_config["kwargs"])
    if kwargs.pop("pretrained", False):
        raise InputError("model.kwargs.pretrained=true would download weights; train from scratch")
    if name == "DenseNet121":
        return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, pretrained=False, **kwargs)
    if name == "Classifier":
        return Classifier(in_shape=(1, *network_config["patch_size"]), classes=2, **{**CLASSIFIER_DEFAULTS, **kwargs})
    raise InputError(f"model.network={name} cannot classify slices; use one of {', '.join(SLICE_NETWORKS)}")


def cam_layer(network_config: dict) -> str:
    """The last feature layer, whose activations the class activation map weighs."""
    if network_config["network"] == "DenseNet121":
        return "class_layers.relu"
    channels = network_config["kwargs"].get("channels", CLASSIFIER_DEFAULTS["channels"])
    return f"net.layer_{len(channels) - 1}"


class ClassificationLoss(nn.Module):
    """Cross-entropy or focal loss (seed 001's choice for its third stage) on (B, 2) logits and (B,) targets."""

    def __init__(self, loss_config: dict):
        super().__init__()
        self.focal = None
        if loss_config["name"] == "focal":
            self.focal = FocalLoss(include_background=True, to_onehot_y=True, gamma=float(loss_config["gamma"]), use_softmax=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.focal is None:
            return F.cross_entropy(logits, target)
        return self.focal(logits, target[:, None])


def binary_metrics(truth: np.ndarray, probability: np.ndarray, threshold: float = DECISION_THRESHOLD) -> dict:
    """Accuracy, sensitivity, specificity, their mean and ROC AUC (sklearn); None where a class is absent."""
    truth = np.asarray(truth, bool)
    predicted = np.asarray(probability) >= threshold
    sensitivity = float(predicted[truth].mean()) if truth.any() else None
    specificity = float((~predicted[~truth]).mean()) if (~truth).any() else None
    defined = [v for v in (sensitivity, specificity) if v is not None]
    return {
        "accuracy": float((predicted == truth).mean()),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "balanced_accuracy": float(np.mean(defined)),
        "auc": float(roc_auc_score(truth, probability)) if len(defined) == 2 else None,
    }


def _augmentations(config: dict) -> list:
    aug = config["augment"]
    sigma = tuple(float(s) for s in aug["smooth_sigma"])
    return [
        *[RandFlipd(keys="image", prob=float(aug["flip_prob"]), spatial_axis=axis) for axis in (0, 1)],
        RandRotated(keys="image", range_x=math.radians(float(aug["rotate_deg"])), prob=float(aug["rotate_prob"])),
        RandShiftIntensityd(keys="image", offsets=float(aug["shift_offset"]), prob=float(aug["shift_prob"])),
        RandGaussianNoised(keys="image", std=float(aug["noise_std"]), prob=float(aug["noise_prob"])),
        RandGaussianSmoothd(keys="image", sigma_x=sigma, sigma_y=sigma, prob=float(aug["smooth_prob"])),
    ]


class _BinaryClassificationTask:
    """Shared loop parts: items are dicts with an HU "image" (1, y, x) and an integer "target"."""

    metric_name = "val_balanced_accuracy"

    def __init__(self, config: dict, train_items: list[dict], val_items: list[dict]):
        if not train_items or not val_items:
            raise InputError(f"task {config['task']} found no training or no validation items; add cases")
        self.config = config
        self.train_items, self.val_items = train_items, val_items
        self.train_targets = np.array([item["target"] for item in train_items], bool)
        low, high = (float(v) for v in config["data"]["hu_window"])
        self.transforms = Compose(
            [ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True), *self._resize_d(), *_augmentations(config)]
        )
        self.window = window(config)

    def _resize_d(self) -> list:
        return []

    def prepare(self, image_hu: np.ndarray) -> torch.Tensor:
        """An item's image as the network sees it at validation: windowed (and resized where the task does)."""
        return torch.as_tensor(self.window(image_hu), dtype=torch.float32)

    def build_loss(self) -> nn.Module:
        return ClassificationLoss(self.config["loss"])

    def epoch_items(self, rng: np.random.Generator) -> list[dict]:
        return [self.train_items[i] for i in balanced_indices(self.train_targets, rng)]

    @staticmethod
    def batch(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"].to(device).float(), torch.as_tensor(batch["target"]).to(device).long()

    @torch.no_grad()
    def probabilities(self, model: nn.Module, items: list[dict], device: torch.device) -> np.ndarray:
        """P(class 1) for each item, in batches."""
        batch_size = int(self.config["train"]["batch_size"])
        out = []
        for start in range(0, len(items), batch_size):
            x = torch.stack([self.prepare(item["image"]) for item in items[start : start + batch_size]]).to(device)
            out.append(torch.softmax(model(x).float(), dim=1)[:, 1].cpu())
        return torch.cat(out).numpy()

    @torch.no_grad()
    def validate(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> dict:
        probability = self.probabilities(model, self.val_items, device)
        truth = np.array([item["target"] for item in self.val_items])
        p = torch.as_tensor(probability, dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
        logits = torch.stack([torch.log1p(-p), torch.log(p)], dim=1).float().to(device)
        loss = float(loss_fn(logits, torch.as_tensor(truth, device=device).long()))
        return {"val_loss": loss, **{f"val_{k}": v for k, v in binary_metrics(truth, probability).items()}}


class SliceClassificationTask(_BinaryClassificationTask):
    """Seed 003: does an axial slice contain coronary calcium? Whole slices resized to data.patch_size."""

    def __init__(self, config: dict, train_cases: list[Case], val_cases: list[Case]):
        model = config["model"]
        if model["network"] not in SLICE_NETWORKS:
            raise InputError(f"model.network={model['network']} cannot classify slices; use one of {', '.join(SLICE_NETWORKS)}")
        patch = [int(p) for p in config["data"]["patch_size"]]
        if len(patch) != 2:
            raise InputError(f"data.patch_size {patch} must be [y, x]: slices are resized to it")
        self.network_config = {
            "task": "slice_classification",
            "network": model["network"],
            "kwargs": dict(model["kwargs"]),
            "patch_size": patch,
            "hu_window": [float(v) for v in config["data"]["hu_window"]],
            "inplane_spacing_mm": model["inplane_spacing_mm"],
            "classes": {"0": "no coronary calcium", "1": "coronary calcium"},
        }
        self.resize = Resize(spatial_size=patch, mode="area")
        super().__init__(config, slice_class_items(train_cases), slice_class_items(val_cases))

    def _resize_d(self) -> list:
        return [Resized(keys="image", spatial_size=self.network_config["patch_size"], mode="area")]

    def prepare(self, image_hu: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.resize(self.window(image_hu)), dtype=torch.float32)

    def build_model(self) -> nn.Module:
        return build_slice_classifier(self.network_config)

    def save(self, folder: Path, model: nn.Module, metadata: dict) -> Path:
        """Weights, config and model card in FOLDER; Grad-CAM overlays of validation slices in OUTPUT_DIR/cam."""
        from .export import save_task_model

        device = next(model.parameters()).device
        paths = write_cam_overlays(
            self, model, Path(self.config["output_dir"]) / "cam", int(self.config["data"]["cam_slices"]), device
        )
        metadata = {**metadata, "class_activation_maps": [str(p) for p in paths]}
        return save_task_model(folder, model, self.network_config, metadata)


def slice_class_items(cases: list[Case]) -> list[dict]:
    """One item per axial slice; target 1 where any label > 0 lies on the slice."""
    items = []
    for case in cases:
        if case.labels is None:
            raise InputError(f"case {case.id} has no label map; slice labels are derived from label maps")
        positive = case.labels.reshape(case.labels.shape[0], -1).any(axis=1)
        items += [
            {"image": case.image[z][None], "target": int(positive[z]), "case": case.id, "slice": z}
            for z in range(case.image.shape[0])
        ]
    return items


def write_cam_overlays(task: SliceClassificationTask, model: nn.Module, folder: Path, count: int, device) -> list[Path]:
    """Grad-CAM (monai.visualize) of the calcium class over the validation slices the model finds most
    likely calcified, calcium slices first, then calcium-free ones; one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from monai.visualize import GradCAM

    if count <= 0:
        return []
    items = task.val_items
    probability = task.probabilities(model, items, device)
    order = sorted(range(len(items)), key=lambda i: (-items[i]["target"], -probability[i]))[:count]
    cam = GradCAM(nn_module=model, target_layers=cam_layer(task.network_config))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    model.eval()
    for i in order:
        item = items[i]
        x = task.prepare(item["image"])[None].to(device)
        with torch.enable_grad():
            heat = cam(x, class_idx=1)[0, 0].detach().cpu().numpy()
        figure, axis = plt.subplots(figsize=(4, 4))
        axis.imshow(x[0, 0].cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        axis.imshow(heat, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
        axis.set_title(f"{item['case']} slice {item['slice']}: truth {item['target']}, p={probability[i]:.2f}", fontsize=8)
        axis.axis("off")
        path = folder / f"{item['case']}_slice{item['slice']:03d}.png"
        figure.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


class FalsePositiveTask(_BinaryClassificationTask):
    """Seed 001 stage 3: calcium candidate patches, coronary calcium (1) vs anything else (0)."""

    def __init__(self, config: dict, train_cases: list[Case], val_cases: list[Case]):
        from ..models.networks import make_config

        model, data = config["model"], config["data"]
        if model["network"] != "Classifier":
            raise InputError("fp_classifier: model.network must be Classifier (the network the inference pipeline runs)")
        self.model_config = make_config(
            network="Classifier",
            spatial_dims=2,
            patch_size=tuple(int(p) for p in data["patch_size"]),
            hu_window=tuple(float(v) for v in data["hu_window"]),
            inplane_spacing_mm=model["inplane_spacing_mm"],
            task="fp_classifier",
            **model["kwargs"],
        )
        threshold = float(data["candidate_threshold_hu"])
        patch = self.model_config["preprocessing"]["patch_size"]
        low = float(data["hu_window"][0])
        super().__init__(
            config,
            [item for case in train_cases for item in candidate_patches(case, patch, threshold, low)],
            [item for case in val_cases for item in candidate_patches(case, patch, threshold, low)],
        )

    def build_model(self) -> nn.Module:
        from ..models.networks import build_network

        return build_network(self.model_config)


def candidate_patches(case: Case, patch_size, threshold_hu: float, pad_hu: float) -> list[dict]:
    """2D patches around each calcium candidate, cut as the inference pipeline cuts them.

    Candidates: 26-connected voxels >= threshold_hu inside the heuristic heart ROI; the patch is the
    candidate's centre slice around its centre of mass, the ROI crop padded with pad_hu. Target 1 where the
    candidate holds a coronary label."""
    from ..inference.roi import heart_roi_heuristic
    from ..volume import CTVolume

    if case.labels is None:
        raise InputError(f"case {case.id} has no label map; candidates are judged against the labels")
    region = heart_roi_heuristic(CTVolume(array=case.image, spacing=case.spacing))
    hu, labels = case.image[region.slices], case.labels[region.slices]
    components, count = ndimage.label(hu >= threshold_hu, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return []
    index = range(1, count + 1)
    coronary = ndimage.maximum(labels > 0, components, index)
    centres = ndimage.center_of_mass(np.ones_like(components), components, index)
    half_y, half_x = (max(1, round(int(size) / 2)) for size in patch_size)
    padded = np.pad(hu, ((0, 0), (half_y, half_y), (half_x, half_x)), constant_values=pad_hu)
    items = []
    for number, ((cz, cy, cx), positive) in enumerate(zip(centres, coronary, strict=True), start=1):
        z, y, x = round(cz), round(cy) + half_y, round(cx) + half_x
        items.append(
            {
                "image": padded[z, y - half_y : y + half_y, x - half_x : x + half_x][None].astype(np.float32),
                "target": int(bool(positive)),
                "case": case.id,
                "candidate": number,
            }
        )
    return items
