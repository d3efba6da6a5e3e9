"""Reading the per-item forget flag that every strategy keys on."""

from __future__ import annotations

import torch
from ignite.engine import Engine

from medunlearn_monai.forget import FORGET_KEY


def forget_mask(engine: Engine, forget_key: str = FORGET_KEY) -> torch.Tensor:
    """Boolean vector, one entry per item of the current (collated) batch: True for forget items.

    Raises:
        KeyError: when the batch carries no forget flag (the unlearn dataset must come from
            ``ForgetSplit.flagged``).
    """
    batch = engine.state.batch
    if not isinstance(batch, dict) or forget_key not in batch:
        raise KeyError(
            f"batch has no '{forget_key}' flag: build the unlearning dataset from ForgetSplit.flagged(...) "
            "so strategies can tell forget items from retain items."
        )
    return torch.as_tensor(batch[forget_key]).reshape(-1).bool()
