"""A training loader must yield at least one batch: checked before any work, where the cause can be named."""

from __future__ import annotations

from collections.abc import Sized


def check_full_batch(items: Sized, batch_size: int, drop_last: bool) -> None:
    """Fail when a loader that drops its last partial batch would give the trainer no batch at all.

    Without this check such a run trains zero steps and ends without a model, yet exits as if it had worked.

    Raises:
        ValueError: when ``drop_last`` is set and ``items`` holds fewer than ``batch_size`` items.
    """
    if drop_last and len(items) < int(batch_size):
        raise ValueError(
            f"the training data holds {len(items)} items, fewer than batch_size {batch_size}: the loader drops "
            "its last partial batch, so training would run no step; lower --batch_size."
        )
