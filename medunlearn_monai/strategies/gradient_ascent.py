"""Gradient ascent on forget items (GA), optionally with descent on retain items (NegGrad+)."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from medunlearn_monai.forget import FORGET_KEY
from medunlearn_monai.strategies._batch import forget_mask
from medunlearn_monai.strategies._state import NoRunState


class GradientAscent(NoRunState):
    """Replace the trainer's batch loss by ``retain_weight * l_retain - forget_weight * l_forget``.

    ``l_retain`` and ``l_forget`` are the summed per-item losses of retain and forget items divided
    by the batch size, so on a forget-only loader this is plain gradient ascent (GA) and on a mixed
    loader NegGrad+. The trainer's ``loss_function`` must return per-item losses
    (``reduction="none"``); voxel-wise losses are averaged per item.

    Args:
        forget_weight: weight of the ascent on forget items (> 0).
        retain_weight: weight of the descent on retain items (>= 0).
        forget_key: batch key of the per-item forget flag.

    Raises:
        ValueError: for a non-positive ``forget_weight`` or a negative ``retain_weight``.
    """

    def __init__(self, forget_weight: float = 1.0, retain_weight: float = 1.0, forget_key: str = FORGET_KEY):
        if forget_weight <= 0:
            raise ValueError(f"forget_weight must be positive, got {forget_weight}.")
        if retain_weight < 0:
            raise ValueError(f"retain_weight must not be negative, got {retain_weight}.")
        self.forget_weight = forget_weight
        self.retain_weight = retain_weight
        self.forget_key = forget_key

    def attach(self, engine: Engine) -> None:
        """Rewrite the loss after the trainer computed it and before it back-propagates."""
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        per_item = engine.loss_function(output[CommonKeys.PRED], output[CommonKeys.LABEL])
        if per_item.dim() == 0:
            raise ValueError(
                "GradientAscent needs one loss per item: set reduction='none' on the trainer's loss function."
            )
        per_item = per_item.reshape(per_item.shape[0], -1).mean(dim=1)
        flags = forget_mask(engine, self.forget_key).to(per_item.device)
        weights = torch.where(flags, -self.forget_weight, self.retain_weight).to(per_item.dtype)
        output[CommonKeys.LOSS] = (weights * per_item).sum() / per_item.shape[0]
