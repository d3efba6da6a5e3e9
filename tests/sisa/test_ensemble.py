"""The shard ensemble's prediction: the mean of its members' probabilities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medunlearn_monai.sisa import ShardEnsemble


def ensemble_with_random_members(shards: int, activation: str, out_channels: int = 4) -> ShardEnsemble:
    torch.manual_seed(0)
    ensemble = ShardEnsemble(nn.Conv2d(1, out_channels, 3, padding=1), shards, activation)
    for member in ensemble.members:
        nn.init.normal_(member.weight)
    return ensemble


def test_softmax_ensemble_returns_log_of_mean_probabilities():
    ensemble = ensemble_with_random_members(3, "softmax")
    inputs = torch.randn(2, 1, 5, 5)
    expected = torch.stack([member(inputs).softmax(dim=1) for member in ensemble.members]).mean(dim=0)
    output = ensemble(inputs)
    assert output.shape == (2, 4, 5, 5)  # a segmentation map keeps its voxels
    torch.testing.assert_close(output.softmax(dim=1), expected)
    torch.testing.assert_close(output.exp(), expected)


def test_sigmoid_ensemble_returns_logits_of_mean_probabilities():
    ensemble = ensemble_with_random_members(2, "sigmoid")
    inputs = torch.randn(3, 1, 4, 4)
    expected = torch.stack([member(inputs).sigmoid() for member in ensemble.members]).mean(dim=0)
    torch.testing.assert_close(ensemble(inputs).sigmoid(), expected, atol=1e-6, rtol=1e-5)


def test_members_start_as_copies_and_train_apart():
    ensemble = ShardEnsemble(nn.Linear(3, 2), 2)
    first, second = ensemble.members
    assert torch.equal(first.weight, second.weight) and first.weight is not second.weight
    assert set(ensemble.state_dict()) == {"members.0.weight", "members.0.bias", "members.1.weight", "members.1.bias"}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="at least one shard"):
        ShardEnsemble(nn.Linear(3, 2), 0)
    with pytest.raises(ValueError, match="softmax, sigmoid"):
        ShardEnsemble(nn.Linear(3, 2), 2, "relu")
