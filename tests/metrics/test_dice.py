"""Dice relative to the original and the retrained model: plain numbers in, numbers out."""

from __future__ import annotations

import pytest

from medunlearn_monai.metrics.dice import dice_relative_to_original, forget_dice_gap


def test_relative_to_the_original_in_percent():
    metrics = {"forget_dice": 0.2, "retain_dice": 0.72, "test_dice": 0.6}
    original = {"forget_dice": 0.8, "retain_dice": 0.8, "test_dice": 0.75}
    assert dice_relative_to_original(metrics, original) == pytest.approx(
        {"forget_dice_decrease_pct": 75.0, "retain_dice_kept_pct": 90.0, "test_dice_kept_pct": 80.0}
    )


def test_nothing_relative_to_a_missing_or_zero_dice():
    assert dice_relative_to_original({"forget_dice": 0.2}, {"forget_dice": 0.0, "retain_dice": 0.8}) == {}


def test_forget_gap_to_the_retrained_model_in_points():
    assert forget_dice_gap({"forget_dice": 0.25}, {"forget_dice": 0.5}) == {"forget_dice_gap_to_retrain": 25.0}
    assert forget_dice_gap({"forget_dice": 0.25}, {}) == {}
