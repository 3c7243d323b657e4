"""Ensemble rules: the mean of softmax probabilities, and seed 000's multiplicative rule.

Seed 000 multiplies a Tversky UNet's output by the square of a BCE baseline UNet's prediction and by the
original image (normalised to [0, 1]). The baseline is precise but under-segments, the Tversky model finds
larger regions with more noise: the product keeps only what both agree on, squaring makes the precise model
dominate, and the image factor suppresses dark pixels, which can never be calcium.

Mapping to this project: the rule is applied per artery to softmax probabilities (background, LM, LAD, LCX,
RCA), and the image is the HU-windowed input scaled to [0, 1] exactly as the networks see it. The products
are scores, not probabilities; as background the pipeline gets 1 - the best artery score, so its rule
"calcium where P(background) < 0.5" becomes the paper's "best score above 0.5".
"""

from __future__ import annotations

import torch

ENSEMBLE_RULES = ("mean", "multiplicative")


def multiplicative_ensemble(tversky_prob: torch.Tensor, baseline_prob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """tversky_prob * baseline_prob**2 * image, per class; image (B, 1, ...) broadcasts over the class axis."""
    if tversky_prob.shape != baseline_prob.shape:
        raise ValueError(f"member outputs differ in shape: {tuple(tversky_prob.shape)} vs {tuple(baseline_prob.shape)}")
    return tversky_prob * baseline_prob.square() * image.clamp(0.0, 1.0)


def multiplicative_scores(tversky_prob: torch.Tensor, baseline_prob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) like a softmax output: channel 0 = 1 - the best artery score, channels 1.. = artery scores."""
    scores = multiplicative_ensemble(tversky_prob[:, 1:], baseline_prob[:, 1:], image)
    return torch.cat([1.0 - scores.amax(dim=1, keepdim=True), scores], dim=1)
