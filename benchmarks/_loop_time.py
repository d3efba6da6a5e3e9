"""Compute time of a protocol's work folder that survives resuming: the models' own training-loop seconds."""

from __future__ import annotations

import json
from pathlib import Path


def loop_seconds(work: Path) -> float:
    """Sum of the ``seconds`` in every model record under ``work`` (trainings, retrainings, unlearnings).

    The copies of each seed's original model in its forget-fraction folders are counted once. Evaluation time
    is not in the records and so not in the sum.
    """
    total = 0.0
    for model in work.rglob("*.pt"):
        record = model.with_suffix(".json")
        copied_original = model.name == "model.pt" and model.parent.name.startswith("forget_")
        if copied_original or not record.is_file():
            continue
        total += float(json.loads(record.read_text()).get("seconds") or 0.0)
    return total
