"""Learn Others: forget items are trained towards other (retain) subjects' label maps."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from medunlearn_monai.forget import FORGET_KEY
from medunlearn_monai.random_states import random_transforms, set_transform_states, transform_states
from medunlearn_monai.strategies._labels import ForgetLabelReplacement


class LearnOthers(ForgetLabelReplacement):
    """Replace the label map of every forget item by a label map of another subject before the step.

    Donor maps are taken one item at a time, in the order ``donor_loader`` yields them; when it is
    exhausted it is iterated again (a shuffling DataLoader then gives a new order), so any number
    of forget items can be served by a short donor loader. Only the donors' labels are used.

    Retain items keep their labels. The batch is replaced, never modified in place, so tensors
    cached by the dataset do not change.

    A run checkpoint holds where the donor pass stands (:meth:`state_dict`), so a resumed run takes
    the donors the uninterrupted run would have taken, in the same crops.

    Args:
        donor_loader: re-iterable of collated batches (dicts) of retain items, e.g. a MONAI
            DataLoader over the retain split with the same crop transform as the training data.
        label_key: batch key of the label maps, in the training and the donor batches.
        forget_key: batch key of the per-item forget flag.

    Raises:
        TypeError: when ``donor_loader`` is not iterable.
        ValueError: (during training) when ``donor_loader`` yields no items, or a donor label's
            shape differs from the training item's label shape.
        KeyError: (during training) when a donor batch has no ``label_key``.
    """

    def __init__(self, donor_loader: Iterable, label_key: str = "label", forget_key: str = FORGET_KEY):
        if not isinstance(donor_loader, Iterable):
            raise TypeError(f"donor_loader must be an iterable of collated batches, got {type(donor_loader).__name__}.")
        super().__init__(label_key, forget_key)
        self.donor_loader = donor_loader
        self._batches: Iterator | None = None
        self._pending: list[torch.Tensor] = []
        self._pass_start: torch.Tensor | None = None  # torch's generator when the current pass began
        self._batches_taken = 0  # from the current pass
        self._transforms = random_transforms(getattr(getattr(donor_loader, "dataset", None), "transform", None))

    def state_dict(self) -> dict[str, Any]:
        """Where the donor pass stands, saved in run checkpoints.

        The donor maps left of the current donor batch; how many batches the current pass gave and the state
        torch's generator had when it began (a shuffling loader draws its order from it); the generators of the
        donor dataset's random transforms (its crops).
        """
        state: dict[str, Any] = {
            "pending": [label.as_subclass(torch.Tensor).clone() for label in self._pending],
            "batches_taken": self._batches_taken,
            "transforms": transform_states(self._transforms),
        }
        if self._pass_start is not None:
            state["pass_start"] = self._pass_start
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the donor pass of :meth:`state_dict`.

        The pass is iterated again from the saved generator state up to where it stood; the batches it gives on the
        way are dropped, and neither torch's generator nor the transforms' generators keep the draws this takes.

        Raises:
            ValueError: when the donor loader now gives fewer batches than the pass had given.
        """
        self._pending = list(state["pending"])
        self._batches_taken = int(state["batches_taken"])
        self._pass_start = state.get("pass_start")
        set_transform_states(self._transforms, state["transforms"])
        self._batches = None if self._pass_start is None else self._replayed_pass()

    def _replayed_pass(self) -> Iterator:
        saved_transforms = transform_states(self._transforms)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._pass_start)
            batches = iter(self.donor_loader)
            for taken in range(self._batches_taken):
                if next(batches, None) is None:
                    raise ValueError(
                        f"the checkpoint's donor pass had given {self._batches_taken} batches, donor_loader now gives "
                        f"{taken}: resume with the same donor data."
                    )
        set_transform_states(self._transforms, saved_transforms)
        return batches

    def replace_labels(self, labels: torch.Tensor, flags: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """The next donor label map for every forget item."""
        swapped = labels.clone()
        for position in flags.nonzero().squeeze(1).tolist():
            donor = self._next_donor()
            if donor.shape != labels.shape[1:]:
                raise ValueError(
                    f"donor label shape {tuple(donor.shape)} differs from the training label shape "
                    f"{tuple(labels.shape[1:])}: donor and training crops must share a spatial size "
                    "(use the same crop/resize transform for donor_loader as for the training data)."
                )
            swapped[position] = donor.to(device=labels.device, dtype=labels.dtype)
        return swapped

    def _next_donor(self) -> torch.Tensor:
        """The next donor label map (one item, without batch dimension), restarting the loader when exhausted."""
        if not self._pending:
            self._pending = self._next_donor_batch()
        return self._pending.pop(0)

    def _next_donor_batch(self) -> list[torch.Tensor]:
        restarted = False
        while True:
            if self._batches is None:
                self._pass_start, self._batches_taken = torch.get_rng_state(), 0
                self._batches = iter(self.donor_loader)
                restarted = True
            donor_batch = next(self._batches, None)
            if donor_batch is None:
                self._batches, self._pass_start = None, None
                if restarted:
                    raise ValueError(
                        "donor_loader yielded no items: give a non-empty, re-iterable loader of retain "
                        "items (e.g. a DataLoader, not a one-shot iterator)."
                    )
                continue
            self._batches_taken += 1
            if not isinstance(donor_batch, Mapping):
                raise TypeError(f"donor_loader must yield collated dict batches, got {type(donor_batch).__name__}.")
            if self.label_key not in donor_batch:
                raise KeyError(f"donor batch has no '{self.label_key}' key; it has {sorted(donor_batch)}.")
            items = list(torch.as_tensor(donor_batch[self.label_key]).unbind(0))
            if items:
                return items
