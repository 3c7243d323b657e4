"""Seed 000's multiplicative ensemble of a BCE baseline UNet and a Tversky UNet.

The paper multiplies the Tversky model's output by the square of the baseline's prediction and by the
original image (normalised to [0, 1]). The baseline (BCE) is precise but under-segments, the Tversky model
finds larger regions with more noise: the product keeps only what both agree on, squaring makes the precise
model dominate, and the image factor suppresses dark pixels, which can never be calcium.

Mapping to this project: the outputs are per-class foreground probabilities (softmax over background, LM,
LAD, LCX, RCA); the rule is applied per foreground class, and the image is the HU-windowed input scaled to
[0, 1] exactly as the networks see it. The result is a score in [0, 1], not a normalised probability, so it is
thresholded (default 0.5) rather than arg-maxed against background.
"""

from __future__ import annotations

import torch


def multiplicative_ensemble(tversky_prob: torch.Tensor, baseline_prob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """tversky_prob * baseline_prob**2 * image, per class; image (B, 1, ...) broadcasts over the class axis."""
    if tversky_prob.shape != baseline_prob.shape:
        raise ValueError(f"member outputs differ in shape: {tuple(tversky_prob.shape)} vs {tuple(baseline_prob.shape)}")
    return tversky_prob * baseline_prob.square() * image.clamp(0.0, 1.0)


def ensemble_labels(tversky_prob: torch.Tensor, baseline_prob: torch.Tensor, image: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Integer label map (B, 1, ...): the foreground class with the highest ensemble score where it passes `threshold`."""
    score = multiplicative_ensemble(tversky_prob[:, 1:], baseline_prob[:, 1:], image)
    best, index = score.max(dim=1, keepdim=True)
    return torch.where(best >= threshold, index + 1, torch.zeros_like(index))
