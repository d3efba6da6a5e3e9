"""Noisy labels for forget items: LearnNoise (pure noise maps) and Noisy Label (corrupted true maps)."""

from __future__ import annotations

from numbers import Integral

import torch
from ignite.engine import Engine, Events

from medunlearn_monai.forget import FORGET_KEY
from medunlearn_monai.strategies._batch import forget_mask


class NoisyLabel:
    """Replace voxels of every forget item's label map by uniformly drawn classes before the step.

    Each voxel (or element, for any label shape) of a forget item's label is, with probability
    ``noise_fraction``, replaced by a class drawn uniformly from all ``num_classes`` classes, so the
    drawn class may equal the true one and about ``noise_fraction * (1 - 1 / num_classes)`` of the
    voxels actually change. With ``noise_fraction=1`` this is *LearnNoise*: forget inputs are
    trained towards pure noise maps; smaller fractions corrupt the true map (*Noisy Label*).

    Retain items keep their labels. Fresh noise is drawn each time an item is seen, from a seeded
    generator so a run is reproducible. The batch is replaced, never modified in place, so tensors
    cached by the dataset do not change.

    Args:
        num_classes: number of classes of the segmentation (at least 2).
        noise_fraction: probability that a voxel is replaced by a random class, in (0, 1].
        seed: seed of the noise generator.
        label_key: batch key of the class-index label maps.
        forget_key: batch key of the per-item forget flag.

    Raises:
        TypeError: when ``num_classes`` is not an integer.
        ValueError: when ``num_classes`` is below 2 or ``noise_fraction`` is outside (0, 1].
    """

    def __init__(
        self,
        num_classes: int,
        noise_fraction: float = 1.0,
        seed: int = 0,
        label_key: str = "label",
        forget_key: str = FORGET_KEY,
    ):
        if isinstance(num_classes, bool) or not isinstance(num_classes, Integral):
            raise TypeError(f"num_classes must be an integer, got {num_classes!r}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if not 0.0 < noise_fraction <= 1.0:
            raise ValueError(f"noise_fraction must be in (0, 1], got {noise_fraction}.")
        self.num_classes = num_classes
        self.noise_fraction = noise_fraction
        self.label_key = label_key
        self.forget_key = forget_key
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The noise generator's state, saved in run checkpoints so a resumed run draws what it would have drawn."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the noise generator from :meth:`state_dict`."""
        self.generator.set_state(state["generator"])

    def attach(self, engine: Engine) -> None:
        """Add noise at the start of every iteration, before the trainer prepares the batch."""
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        flags = forget_mask(engine, self.forget_key)
        if not flags.any():
            return
        labels = torch.as_tensor(batch[self.label_key])
        index = flags.nonzero().squeeze(1).to(labels.device)
        true_maps = labels[index]
        # Draw on the CPU generator, so the noise does not depend on the device the labels live on.
        draws = torch.randint(0, self.num_classes, true_maps.shape, generator=self.generator)
        draws = draws.to(device=labels.device, dtype=labels.dtype)
        if self.noise_fraction < 1.0:
            replace = torch.rand(true_maps.shape, generator=self.generator) < self.noise_fraction
            draws = torch.where(replace.to(labels.device), draws, true_maps)
        noisy = labels.clone()
        noisy[index] = draws
        engine.state.batch = {**batch, self.label_key: noisy}
