"""The common skeleton of the strategies that train forget items towards other labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

from medunlearn_monai.forget import FORGET_KEY
from medunlearn_monai.strategies._batch import forget_mask


class ForgetLabelReplacement:
    """Base of a handler that replaces the labels of the forget items in every batch before the step.

    At the start of every iteration, before the trainer prepares the batch, it reads the batch's forget flags; when
    one item or more is flagged it asks :meth:`replace_labels` for the batch's new labels and puts them in a copy of
    the batch. The batch is replaced, never modified in place, so tensors cached by the dataset do not change. Retain
    items keep their labels.

    Args:
        label_key: batch key of the labels.
        forget_key: batch key of the per-item forget flag.
    """

    def __init__(self, label_key: str = "label", forget_key: str = FORGET_KEY):
        self.label_key = label_key
        self.forget_key = forget_key

    def attach(self, engine: Engine) -> None:
        """Replace labels at the start of every iteration, before the trainer prepares the batch."""
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        flags = forget_mask(engine, self.forget_key)
        if not flags.any():
            return
        labels = self.replace_labels(torch.as_tensor(batch[self.label_key]), flags, batch)
        if labels is not None:
            engine.state.batch = {**batch, self.label_key: labels}

    def replace_labels(
        self, labels: torch.Tensor, flags: torch.Tensor, batch: Mapping[str, Any]
    ) -> torch.Tensor | None:
        """The batch's new labels, those of the items ``flags`` marks replaced; None leaves the batch as it is.

        Args:
            labels: the batch's labels, one row per item; not to be modified in place.
            flags: boolean vector, True for the forget items (at least one).
            batch: the whole collated batch.
        """
        raise NotImplementedError


class SeededLabelReplacement(ForgetLabelReplacement):
    """A :class:`ForgetLabelReplacement` that draws the new labels from its own seeded generator.

    The generator lives on the CPU, so the draws do not depend on the device the labels are on, and its state is
    saved in run checkpoints (:meth:`state_dict`), so a resumed run draws what the uninterrupted one would have.

    Args:
        seed: seed of the generator, so a run is reproducible.
        label_key: batch key of the labels.
        forget_key: batch key of the per-item forget flag.
    """

    def __init__(self, seed: int = 0, label_key: str = "label", forget_key: str = FORGET_KEY):
        super().__init__(label_key, forget_key)
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator's state, saved in run checkpoints so a resumed run draws what it would have drawn."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the generator from :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
