"""The training loss: soft Dice (what the paper trained with) plus binary cross-entropy, on logits.

BCE gives every pixel a gradient from the first step (Dice alone is flat where the network says
nothing); Dice keeps the small GM class from being drowned by the background. Computed in float32
even under mixed precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Added to the numerator and denominator of the soft Dice, so an empty target with an empty
#: prediction scores 1 and the gradient stays finite.
DICE_SMOOTH = 1.0


def soft_dice(prob: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Mean over the batch of each crop's soft Dice, (B, 1, H, W) inputs in [0, 1]."""
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dims)
    return ((2 * inter + smooth) / (prob.sum(dims) + target.sum(dims) + smooth)).mean()


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0) -> torch.Tensor:
    """(1 - soft Dice) + ``bce_weight`` * BCE, from logits (B, 1, H, W) and targets in [0, 1]."""
    logits = logits.float()
    target = target.float()
    dice = soft_dice(torch.sigmoid(logits), target)
    return (1 - dice) + bce_weight * F.binary_cross_entropy_with_logits(logits, target)
