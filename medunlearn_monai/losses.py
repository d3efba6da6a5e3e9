"""Losses the bundles need that torch and MONAI do not ship."""

from __future__ import annotations

import torch
from torch.nn import functional


class MaskedBCEWithLogitsLoss(torch.nn.Module):
    """Binary cross-entropy on logits that skips targets marked unknown (NaN).

    CheXpert's "ignore" policy leaves uncertain observations out of training; torch's
    ``BCEWithLogitsLoss`` only takes per-element weights, which would have to travel beside the
    targets, so unknown targets are NaN here and contribute zero loss and zero gradient.
    Returns per-element losses (``reduction="none"``) so strategies can weigh items.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        losses = functional.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), reduction="none")
        return torch.where(known, losses, torch.zeros_like(losses))
