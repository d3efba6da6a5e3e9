"""Random states: saved with weights-only-loadable values and restored, nested MONAI generators included."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandCropByPosNegLabeld, RandGaussianNoised, ScaleIntensityd

from medunlearn_monai.random_states import RandomStates
from medunlearn_monai.safe_loading import load_weights


def _draws(crop: RandCropByPosNegLabeld) -> list[float]:
    return [torch.rand(1).item(), float(np.random.rand()), random.random(), float(crop.cropper.R.rand())]


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    # RandCropByPosNegLabeld draws from its inner cropper's generator, not its own.
    crop = RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=[4, 4])
    transform = Compose([ScaleIntensityd(keys="image"), crop])
    transform.set_random_state(seed=3)
    states = RandomStates(transform)
    assert any(found is crop.cropper for found in states.transforms)
    torch.save(states.state_dict(), tmp_path / "states.pt")
    expected = _draws(crop)
    states.load_state_dict(load_weights(tmp_path / "states.pt"))
    assert _draws(crop) == expected


def test_random_states_refuse_another_preprocessing():
    saved = RandomStates(Compose([RandGaussianNoised(keys="image")])).state_dict()
    with pytest.raises(ValueError, match=r"states of 3 random transforms, this run has 0"):
        RandomStates(None).load_state_dict(saved)
