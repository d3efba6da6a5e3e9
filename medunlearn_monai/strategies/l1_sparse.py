"""l1-sparse: fine-tuning with an L1 penalty on the weights whose weight decays linearly to 0."""

from __future__ import annotations

import math

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from medunlearn_monai.strategies._modules import unwrap_network
from medunlearn_monai.strategies._state import NoRunState


class L1Sparse(NoRunState):
    """Add ``gamma_t * ||theta||_1`` to the trainer's batch loss (Jia et al., NeurIPS 2023).

    ``theta`` is every parameter of the network; ``gamma_t`` falls linearly from ``l1_weight`` at the
    run's first iteration to exactly 0 at its last (``max_epochs * epoch_length``); a run of one
    iteration keeps ``l1_weight``. The trainer's loss at this point is already the batch mean, so the
    penalty is added to it as is. On a retain-only loader this is the l1-sparse unlearning method.

    Args:
        l1_weight: the penalty's weight at the first iteration (gamma_0, > 0).

    Raises:
        ValueError: when ``l1_weight`` is not a positive number; (during the run) when the epoch length
            is unknown.
    """

    def __init__(self, l1_weight: float = 5e-4):
        if not (math.isfinite(l1_weight) and l1_weight > 0):
            raise ValueError(f"l1_weight must be a positive number, got {l1_weight}.")
        self.l1_weight = l1_weight

    def attach(self, engine: Engine) -> None:
        """Add the penalty after the trainer computed the loss and before it back-propagates."""
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def weight(self, engine: Engine) -> float:
        """``gamma_t`` at the engine's current iteration."""
        if engine.state.epoch_length is None:
            raise ValueError("L1Sparse schedules its weight over the run: give the trainer a loader with a length.")
        total = engine.state.max_epochs * engine.state.epoch_length
        if total <= 1:
            return self.l1_weight
        return self.l1_weight * (total - engine.state.iteration) / (total - 1)

    def __call__(self, engine: Engine) -> None:
        norm = torch.stack([parameter.abs().sum() for parameter in unwrap_network(engine.network).parameters()]).sum()
        output = engine.state.output
        output[CommonKeys.LOSS] = output[CommonKeys.LOSS] + self.weight(engine) * norm
