"""A segmenter's Dice relative to other models': the original model's (kept or lost, in percent) and the retrained
model's (the gap, in points)."""

from __future__ import annotations

from collections.abc import Mapping


def dice_relative_to_original(metrics: Mapping[str, float], original: Mapping[str, float]) -> dict[str, float]:
    """The paper's headline numbers from split metrics and the original model's, in percent.

    ``forget_dice_decrease_pct`` = 100 (D_orig - D) / D_orig on the forget subjects, ``retain_dice_kept_pct`` =
    100 D / D_orig on the retain subjects, and ``test_dice_kept_pct`` likewise; each only when both Dice values are
    there and the original's is not 0.
    """
    scores = {}
    if original.get("forget_dice") and "forget_dice" in metrics:
        scores["forget_dice_decrease_pct"] = 100.0 * (1.0 - metrics["forget_dice"] / original["forget_dice"])
    for split in ("retain", "test"):
        if original.get(f"{split}_dice") and f"{split}_dice" in metrics:
            scores[f"{split}_dice_kept_pct"] = 100.0 * metrics[f"{split}_dice"] / original[f"{split}_dice"]
    return scores


def forget_dice_gap(metrics: Mapping[str, float], retrained: Mapping[str, float]) -> dict[str, float]:
    """``forget_dice_gap_to_retrain`` = 100 |D_forget - D_forget(retrained)|, in points, when both are there."""
    if "forget_dice" in retrained and "forget_dice" in metrics:
        return {"forget_dice_gap_to_retrain": 100.0 * abs(metrics["forget_dice"] - retrained["forget_dice"])}
    return {}
