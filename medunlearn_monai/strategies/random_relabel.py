"""Random relabeling (RL): forget items are trained towards a random wrong class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medunlearn_monai.forget import FORGET_KEY
from medunlearn_monai.strategies._labels import SeededLabelReplacement


class RandomRelabel(SeededLabelReplacement):
    """Replace the label of every forget item by a uniformly drawn *different* class before the step.

    Retain items keep their labels, so on a mixed batch the trainer learns the retain data while
    unlearning the forget data. A fresh wrong label is drawn each time an item is seen. With
    ``multilabel`` the label is a 0/1 vector over ``num_classes`` observations and the new one is a
    uniformly drawn *different* 0/1 vector; unknown observations (NaN) stay unknown, and at least one
    known observation always changes (an item without any known observation keeps its label). The batch is
    replaced, never modified in place.

    Args:
        num_classes: number of classes of the classifier (at least 2), or of observations.
        seed: seed of the label generator, so a run is reproducible.
        multilabel: labels are 0/1 vectors (multi-label classification) rather than class indices.
        label_key: batch key of the class-index labels.
        forget_key: batch key of the per-item forget flag.

    Raises:
        ValueError: when ``num_classes`` is below 2.
    """

    def __init__(
        self,
        num_classes: int,
        seed: int = 0,
        multilabel: bool = False,
        label_key: str = "label",
        forget_key: str = FORGET_KEY,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 to draw a different label, got {num_classes}.")
        super().__init__(seed, label_key, forget_key)
        self.num_classes = num_classes
        self.multilabel = multilabel

    def replace_labels(self, labels: torch.Tensor, flags: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """A uniformly drawn different class (or 0/1 vector) for every forget item."""
        if self.multilabel:
            return self._other_vectors(labels, flags)
        # A shift in [1, num_classes - 1] modulo num_classes is uniform over the other classes, never y itself.
        shift = torch.randint(1, self.num_classes, (labels.shape[0],), generator=self.generator)
        shift = shift.view(-1, *([1] * (labels.dim() - 1))) * flags.view(-1, *([1] * (labels.dim() - 1)))
        return (labels + shift.to(labels.dtype)) % self.num_classes

    def _other_vectors(self, labels: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        # Adding a non-zero random bit pattern modulo 2 (XOR) is uniform over the other 2^K - 1 vectors.
        # Unknown labels (NaN, e.g. CheXpert's ignored uncertain findings) stay unknown, so a pattern that flips
        # none of an item's known labels would leave it with its true labels: such items draw again, which keeps
        # the flips of the known labels uniform over their non-zero patterns. An item without any known label has
        # nothing to change.
        labels = labels.reshape(labels.shape[0], self.num_classes)
        known = ~torch.isnan(labels).cpu()
        bits = self._bit_patterns(labels.shape[0])
        redraw = flags.cpu() & known.any(dim=1) & ~(bits.bool() & known).any(dim=1)
        while redraw.any():
            bits[redraw] = self._bit_patterns(int(redraw.sum()))
            redraw &= ~(bits.bool() & known).any(dim=1)
        vectors = torch.nan_to_num(labels).round().long()
        bits = bits.to(vectors.device)
        relabeled = torch.where(flags[:, None].to(vectors.device), vectors ^ bits, vectors).to(labels.dtype)
        return torch.where(torch.isnan(labels), labels, relabeled)

    def _bit_patterns(self, count: int) -> torch.Tensor:
        """``count`` uniformly drawn non-zero 0/1 vectors of length ``num_classes``, one per row."""
        patterns = torch.randint(1, 2**self.num_classes, (count,), generator=self.generator)
        return (patterns[:, None] >> torch.arange(self.num_classes)) & 1
