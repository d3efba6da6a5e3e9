"""The prediction of a sharded model: the mean of its shard models' probabilities."""

from __future__ import annotations

import copy

import torch
from torch import nn

ACTIVATIONS = ("softmax", "sigmoid")


class ShardEnsemble(nn.Module):
    """``shards`` copies of one network whose output is the mean of their probabilities, returned as logits.

    Softmax (classes, or per-voxel segmentation maps along channel 1) or sigmoid (multi-label) probabilities are
    averaged over the shards and returned as log-probabilities (softmax) or logits (sigmoid), so the bundle's
    post-processing, losses and metrics, written for one network's logits, read the ensemble unchanged: applying
    the same activation again gives back the averaged probabilities.

    Args:
        member: the network every shard trains (copied ``shards`` times; the copies start identical).
        shards: number of shard models.
        activation: ``softmax`` or ``sigmoid``, the activation of the bundle's post-processing.

    Raises:
        ValueError: for fewer than one shard or another activation.
    """

    def __init__(self, member: nn.Module, shards: int, activation: str = "softmax"):
        super().__init__()
        if not isinstance(shards, int) or shards < 1:
            raise ValueError(f"a shard ensemble needs at least one shard, got {shards!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}.")
        self.activation = activation
        self.members = nn.ModuleList(copy.deepcopy(member) for _ in range(shards))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = [member(inputs) for member in self.members]
        if self.activation == "softmax":
            probabilities = torch.stack([output.float().softmax(dim=1) for output in outputs]).mean(dim=0)
            return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()
        probabilities = torch.stack([output.float().sigmoid() for output in outputs]).mean(dim=0)
        return torch.logit(probabilities, eps=1e-7)
