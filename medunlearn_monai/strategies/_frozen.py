"""The common skeleton of the strategies that keep part of the weights at their starting values."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from medunlearn_monai.strategies._state import NoRunState


class FrozenWeights(NoRunState):
    """Base of a handler that lets only part of a network's weights learn and keeps the rest bit-identical.

    When the run starts the handler is called once (``__call__``) to choose what stays frozen and to copy its
    starting values into :attr:`frozen_values`; after every backward pass :meth:`mask_gradients` takes the frozen
    weights' gradients away, and after every optimizer step :meth:`restore_frozen` writes the starting values back,
    so that neither weight decay nor momentum can move them. What is frozen is rebuilt from the source model when a
    run resumes, so the handler keeps no run state.
    """

    def __init__(self):
        self.frozen_values: dict[str, torch.Tensor] = {}

    def attach(self, engine: Engine) -> None:
        """Choose at the start; mask gradients after backward; restore frozen values after the optimizer step."""
        engine.add_event_handler(Events.STARTED, self)
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.mask_gradients)
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self.restore_frozen)

    def __call__(self, engine: Engine) -> None:
        """Choose the frozen weights of ``engine``'s network and copy their starting values."""
        raise NotImplementedError

    def mask_gradients(self, engine: Engine) -> None:
        """Take the frozen weights' gradients away after the backward pass."""
        raise NotImplementedError

    def restore_frozen(self, engine: Engine) -> None:
        """Write the frozen weights back to their starting values after the optimizer step."""
        raise NotImplementedError
