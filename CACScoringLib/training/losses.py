"""Loss functions by config name. Segmentation losses take logits (B, C, ...) and integer labels (B, 1, ...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss, TverskyLoss
from torch import nn

from ..errors import InputError


class OneHotBCELoss(nn.Module):
    """Binary cross-entropy per output channel against the one-hot label (seed 000's BCE baseline)."""

    def __init__(self, include_background: bool = False):
        super().__init__()
        self.include_background = include_background

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        first = 0 if self.include_background else 1
        return F.binary_cross_entropy_with_logits(logits[:, first:], one_hot[:, first:])


def build_loss(loss_config: dict) -> nn.Module:
    """The configured loss. Tversky keeps MONAI's meaning: `alpha` weighs false positives, `beta` false negatives.
    `batch` pools Dice/Tversky over the batch, so a patch without some artery does not reward predicting none."""
    name = loss_config["name"]
    include_background = bool(loss_config["include_background"])
    common = {
        "to_onehot_y": True,
        "softmax": True,
        "include_background": include_background,
        "batch": bool(loss_config.get("batch", False)),
    }
    if name == "tversky":
        return TverskyLoss(alpha=float(loss_config["alpha"]), beta=float(loss_config["beta"]), **common)
    if name == "dice":
        return DiceLoss(**common)
    if name == "dice_ce":
        return DiceCELoss(**common)
    if name == "dice_focal":
        return DiceFocalLoss(gamma=float(loss_config["gamma"]), **common)
    if name == "focal":
        # Sigmoid per class as in DiceFocalLoss: MONAI's softmax focal drops the background channel
        # before the softmax when include_background is False, which makes the loss identically zero.
        return FocalLoss(include_background=include_background, to_onehot_y=True, gamma=float(loss_config["gamma"]))
    if name == "bce":
        return OneHotBCELoss(include_background=include_background)
    raise InputError(f"loss.name={name} is unknown; use tversky, dice, dice_ce, dice_focal, focal or bce")
