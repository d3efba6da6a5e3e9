"""Where each subject's items go in sharded, sliced training (SISA): a fixed rule of the subject ID and the seed.

A subject's shard and slice depend on its own ID only, never on which other subjects are present, so removing a
subject leaves every other item where it was: the untouched shards and the slices before the first changed one
train on exactly the same data as before, which is what lets unlearning reuse their checkpoints.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from medunlearn_monai.forget import SUBJECT_KEY
from medunlearn_monai.identities import item_identity

ASSIGNMENT_RULE = (
    "v = int(sha256('<seed>:<subject ID>')[:16], 16); shard = v mod shards; slice = (v div shards) mod slices; "
    "all items of a subject share its shard and slice"
)


class ShardPlan:
    """Partition training items by subject into ``shards`` shards of ``slices`` slices each.

    Args:
        shards: number of shards S (independent models), at least 1.
        slices: number of slices R per shard (a checkpoint after each), at least 1.
        seed: mixes into the assignment, so another seed gives another partition.

    Raises:
        ValueError: when ``shards`` or ``slices`` is below 1.
    """

    def __init__(self, shards: int, slices: int, seed: int = 0):
        for name, value in (("shards", shards), ("slices", slices)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SISA needs a whole number of {name} of at least 1, got {value!r}.")
        self.shards = shards
        self.slices = slices
        self.seed = seed

    def locate(self, subject_id: str) -> tuple[int, int]:
        """The ``(shard, slice)`` of one subject (0-based)."""
        value = int(hashlib.sha256(f"{self.seed}:{subject_id}".encode()).hexdigest()[:16], 16)
        return value % self.shards, (value // self.shards) % self.slices

    def slice_indices(self, items: Sequence[Mapping[str, Any]]) -> list[list[list[int]]]:
        """``indices[shard][slice]``: the positions in ``items`` of each slice's items, in the items' order.

        Raises:
            ValueError: when a shard receives no item (too few subjects for this many shards).
        """
        indices: list[list[list[int]]] = [[[] for _ in range(self.slices)] for _ in range(self.shards)]
        for position, item in enumerate(items):
            shard, slice_index = self.locate(str(item[SUBJECT_KEY]))
            indices[shard][slice_index].append(position)
        empty = [shard for shard, slices in enumerate(indices) if not any(slices)]
        if empty:
            raise ValueError(
                f"{len(empty)} of {self.shards} SISA shards would hold no training item: {len(items)} items are too "
                f"few for {self.shards} shards; lower sisa_shards."
            )
        return indices

    def slice_digests(
        self, items: Sequence[Mapping[str, Any]], indices: Sequence[Sequence[int]], salt: bytes, dataset_dir: str
    ) -> list[str]:
        """One digest per slice of a shard: SHA-256 of the sorted salted identities of its items.

        Two trainings saw the same slice iff the digests match; the identities are those of the erasure
        certificate (:func:`medunlearn_monai.identities.item_identity`), so no ID appears in plaintext.
        """
        digests = []
        for positions in indices:
            identities = sorted(item_identity(items[position], salt, dataset_dir) for position in positions)
            digests.append(hashlib.sha256("\n".join(identities).encode()).hexdigest())
        return digests

    def describe(self) -> dict[str, Any]:
        """The plan as recorded in a manifest."""
        return {"shards": self.shards, "slices": self.slices, "seed": self.seed, "assignment": ASSIGNMENT_RULE}


def stage_indices(slices: Sequence[Sequence[int]], stage: int) -> list[int]:
    """The items trained in stage ``stage`` (0-based) of a shard: slices ``0..stage`` together, in order."""
    return sorted(position for slice_positions in slices[: stage + 1] for position in slice_positions)


def shard_dir(model_path: str | os.PathLike) -> str:
    """The folder of a sharded model's checkpoints and manifest: ``models/sisa.pt`` -> ``models/sisa.shards``."""
    root, _ = os.path.splitext(os.fspath(model_path))
    return f"{root}.shards"
