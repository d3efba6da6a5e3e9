"""Test helper: an unlearned model's gap and speedup recomputed by hand from the files beside it and beside
``retrained.pt``, independently of the package's formula (``metrics.gap.avg_gap``), for the three bundle modules.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medunlearn_monai.records import read_json


def assert_scored_against_retraining(models: Path, strategies: list[str], gap_keys: tuple[str, ...]) -> None:
    """Each ``unlearned_<strategy>`` evaluation's ``gap_to_retrain`` is the mean absolute difference from retrained.pt's
    evaluation over ``gap_keys`` in points, and its ``speedup_vs_retrain`` is the ratio of the two records' seconds."""
    retrained = read_json(models / "retrained.eval.json")
    retrain_seconds = read_json(models / "retrained.json")["seconds"]
    for name in strategies:
        metrics = read_json(models / f"unlearned_{name}.eval.json")
        differences = [abs(metrics[key] - retrained[key]) for key in gap_keys]
        assert metrics["gap_to_retrain"] == pytest.approx(100 * sum(differences) / len(gap_keys)), name
        unlearn_seconds = read_json(models / f"unlearned_{name}.json")["seconds"]
        assert metrics["unlearn_seconds"] == pytest.approx(unlearn_seconds), name
        assert metrics["speedup_vs_retrain"] == pytest.approx(retrain_seconds / unlearn_seconds), name
