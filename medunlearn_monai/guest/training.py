"""What our handlers read from a guest's training objects: its learning rate and the state a checkpoint holds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from monai.handlers import LrScheduleHandler


def learning_rate(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the optimizer's first parameter group, as the guest configured it."""
    return float(optimizer.param_groups[0]["lr"])


def checkpoint_objects(
    network: torch.nn.Module, optimizer: torch.optim.Optimizer, handlers: Iterable[Any]
) -> dict[str, Any]:
    """What a run checkpoint holds besides the trainer: the network, the optimizer and the learning-rate scheduler
    of every ``LrScheduleHandler`` among the guest's handlers (``lr_scheduler``, ``lr_scheduler_1``, ...), so that a
    resumed run continues the guest's schedule where it stopped."""
    schedulers = [handler.lr_scheduler for handler in handlers if isinstance(handler, LrScheduleHandler)]
    names = [f"lr_scheduler_{index}" if index else "lr_scheduler" for index in range(len(schedulers))]
    return {"network": network, "optimizer": optimizer, **dict(zip(names, schedulers, strict=True))}
