"""Per-vessel Agatston regression from a whole CT (seed 004): LM (the paper's LCA), LAD, LCX, RCA.

As in the paper the volume is 2.5D: slices become the channels of a 2D network. The paper clipped or padded
every scan around its centre to 73 slices of 512 x 512 and normalised it; here the slices kept around the
centre and the in-plane size are `data.volume_size` (default 32 x 128 x 128, a CPU budget; the in-plane
resize averages pixels, so small plaques fade but do not vanish), windowed like every other model.
Backbones (`model.network`): `CNN` (convolutions, global average pooling, a linear layer to 4 outputs),
`SECNN` (the same CNN behind a squeeze-and-excitation block over the slice channels, MONAI ChannelSELayer,
reduction 16) and `ViT` (MONAI ViT on 32 x 32 patches with a class token, depth 3, 4 heads, MLP 512).
The paper regressed scores with MSE; the target here is log1p(Agatston) per vessel, which keeps 0 and
1000+ scores on one scale. Targets come from the cases' reference scores (a manifest's, e.g. the COCA
non-gated spreadsheet, or a phantom's score_volume of its labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.networks.blocks import ChannelSELayer, Convolution
from monai.transforms import Compose, RandGaussianNoised, RandShiftIntensityd, Resize, ResizeWithPadOrCrop
from scipy import stats
from torch import nn

from ..errors import InputError
from ..labels import ARTERIES
from ..scoring.categories import risk_category
from .data import Case, window

BACKBONES = ("CNN", "SECNN", "ViT")
CNN_DEFAULTS = {"channels": [32, 64, 128, 256]}
VIT_DEFAULTS = {"patch_size": 32, "hidden_size": 256, "mlp_dim": 512, "num_layers": 3, "num_heads": 4}


class SliceChannelCNN(nn.Module):
    """Strided conv blocks, global average pooling, linear head; optional squeeze-excitation over the input slices."""

    def __init__(self, in_channels: int, outputs: int, channels, se_reduction: int | None = None):
        super().__init__()
        # The excitation re-weights the slice channels (the paper's learned slice importance).
        self.se = None if se_reduction is None else ChannelSELayer(2, in_channels, r=max(1, min(se_reduction, in_channels)))
        layers, previous = [], in_channels
        for width in channels:
            layers.append(Convolution(2, previous, int(width), strides=2, kernel_size=3, act="relu", norm="batch"))
            previous = int(width)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.se is not None:
            x = self.se(x)
        return self.head(self.features(x).mean(dim=(2, 3)))


class ViTRegressor(nn.Module):
    """MONAI ViT with its class-token head as a linear regressor (no output activation)."""

    def __init__(self, in_channels: int, image_size, outputs: int, **kwargs):
        super().__init__()
        from monai.networks.nets import ViT

        self.vit = ViT(
            in_channels=in_channels, img_size=tuple(image_size), spatial_dims=2, classification=True,
            num_classes=outputs, post_activation=None, **{**VIT_DEFAULTS, **kwargs},
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)[0]


def build_regressor(network_config: dict) -> nn.Module:
    """The regression network a vessel_regression config describes; input (B, slices, y, x), output (B, 4)."""
    name, kwargs = network_config["network"], dict(network_config["kwargs"])
    depth, *image_size = network_config["volume_size"]
    outputs = len(network_config["outputs"])
    try:
        if name in ("CNN", "SECNN"):
            se = int(kwargs.pop("se_reduction", 16)) if name == "SECNN" else None
            return SliceChannelCNN(depth, outputs, se_reduction=se, **{**CNN_DEFAULTS, **kwargs})
        if name == "ViT":
            return ViTRegressor(depth, image_size, outputs, **kwargs)
    except (TypeError, ValueError, AssertionError) as error:
        raise InputError(f"cannot build {name} from model.kwargs: {error}") from error
    raise InputError(f"model.network={name} is not a regression backbone; use one of {', '.join(BACKBONES)}")


def vessel_targets(case: Case) -> np.ndarray:
    """log1p(Agatston) per artery from the case's reference scores."""
    scores = case.reference_scores or {}
    missing = [key for key in ARTERIES if "agatston" not in (scores.get(key) or {})]
    if missing:
        raise InputError(f"case {case.id} has no reference Agatston score for {', '.join(missing)}; vessel_regression needs all four")
    return np.log1p(np.array([max(0.0, float(scores[key]["agatston"])) for key in ARTERIES], np.float32))


def agreement(reference: np.ndarray, predicted: np.ndarray) -> dict:
    """MAE and Pearson r per vessel and for the total (Agatston units), and risk-category accuracy of the total."""
    result = {}
    names = [*ARTERIES, "total"]
    reference = np.column_stack([reference, reference.sum(axis=1)])
    predicted = np.column_stack([predicted, predicted.sum(axis=1)])
    for column, name in enumerate(names):
        ref, pred = reference[:, column], predicted[:, column]
        defined = len(ref) >= 2 and np.ptp(ref) > 0 and np.ptp(pred) > 0
        result[name] = {
            "mae": float(np.abs(pred - ref).mean()),
            "pearson_r": float(stats.pearsonr(ref, pred)[0]) if defined else None,
        }
    same = [risk_category(r) == risk_category(p) for r, p in zip(reference[:, -1], predicted[:, -1], strict=True)]
    return {"per_vessel": result, "risk_category_accuracy": float(np.mean(same))}


class VesselRegressionTask:
    """Regress four vessel scores from a whole (2.5D) volume with MSE on log1p(Agatston)."""

    metric_name = "val_neg_mse"  # the engine keeps the largest metric

    def __init__(self, config: dict, train_cases: list[Case], val_cases: list[Case]):
        model, data = config["model"], config["data"]
        if model["network"] not in BACKBONES:
            raise InputError(f"model.network={model['network']} is not a regression backbone; use one of {', '.join(BACKBONES)}")
        size = [int(v) for v in data["volume_size"]]
        if len(size) != 3 or min(size) < 1:
            raise InputError(f"data.volume_size {data['volume_size']} must be [slices, y, x] of positive sizes")
        self.config = config
        self.network_config = {
            "task": "vessel_regression",
            "network": model["network"],
            "kwargs": dict(model["kwargs"]),
            "volume_size": size,
            "hu_window": [float(v) for v in data["hu_window"]],
            "inplane_spacing_mm": model["inplane_spacing_mm"],
            "outputs": list(ARTERIES),
            "target": "log1p(agatston)",
        }
        self.window = window(config)
        self.crop = ResizeWithPadOrCrop(spatial_size=(size[0], -1, -1))
        self.resize = Resize(spatial_size=(-1, size[1], size[2]), mode="area")
        if not train_cases or not val_cases:
            raise InputError("vessel_regression needs training and validation cases; add cases")
        self.train_items = [self.item(case) for case in train_cases]
        self.val_items = [self.item(case) for case in val_cases]
        aug = config["augment"]
        self.transforms = Compose(
            [
                RandShiftIntensityd(keys="image", offsets=float(aug["shift_offset"]), prob=float(aug["shift_prob"])),
                RandGaussianNoised(keys="image", std=float(aug["noise_std"]), prob=float(aug["noise_prob"])),
            ]
        )

    def prepare(self, image_hu: np.ndarray) -> np.ndarray:
        """(slices, y, x) network input: windowed, centre slices kept (or padded), in-plane area-resized."""
        volume = self.window(image_hu[None])
        return np.asarray(self.resize(self.crop(volume))[0], np.float32)

    def item(self, case: Case) -> dict:
        return {"image": self.prepare(case.image), "target": vessel_targets(case), "case": case.id}

    def build_model(self) -> nn.Module:
        return build_regressor(self.network_config)

    @staticmethod
    def build_loss() -> nn.Module:
        return nn.MSELoss()

    def epoch_items(self, rng: np.random.Generator) -> list[dict]:
        return list(self.train_items)

    @staticmethod
    def batch(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"].to(device).float(), torch.as_tensor(batch["target"]).to(device).float()

    @torch.no_grad()
    def predict(self, model: nn.Module, items: list[dict], device: torch.device) -> np.ndarray:
        """Regressed log1p scores (n, 4)."""
        x = torch.stack([torch.as_tensor(item["image"]) for item in items]).to(device)
        return model(x).float().cpu().numpy()

    @torch.no_grad()
    def validate(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> dict:
        predicted_log = self.predict(model, self.val_items, device)
        target_log = np.stack([item["target"] for item in self.val_items])
        mse = float(np.mean((predicted_log - target_log) ** 2))
        scores = agreement(np.expm1(target_log), np.expm1(np.clip(predicted_log, 0.0, None)))
        return {
            "val_loss": mse,
            "val_neg_mse": -mse,
            "val_mae_total": scores["per_vessel"]["total"]["mae"],
            "val_risk_category_accuracy": scores["risk_category_accuracy"],
            "val_per_vessel": scores["per_vessel"],
        }

    def save(self, folder: Path, model: nn.Module, metadata: dict) -> Path:
        from .export import save_task_model

        return save_task_model(folder, model, self.network_config, metadata)
