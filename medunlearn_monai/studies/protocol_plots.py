"""The protocol's plots: Avg. Gap versus speedup with error bars, and test accuracy versus forget fraction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

NOISE_FLOOR = "noise_floor"
RETRAIN = "retrain"
Summary = Mapping[str, Mapping[str, Any]]


def gap_versus_speedup(entries: Summary, strategies: Sequence[str]) -> Figure:
    """Each strategy's mean Avg. Gap (y, ± std) against its speedup over retraining (x, ± std, tuning included).

    The noise floor (two exact retrainings against each other) is a shaded band: a method inside it is as
    close to exact retraining as retraining is to itself.
    """
    figure = Figure(figsize=(5.4, 3.9))
    axis = figure.subplots()
    floor = entries.get(NOISE_FLOOR, {})
    if floor.get("gap_to_retrain_mean") is not None:
        mean, std = floor["gap_to_retrain_mean"], floor.get("gap_to_retrain_std") or 0.0
        axis.axhspan(max(mean - std, 0.0), mean + std, color="0.85", label="noise floor (mean ± std)")
        axis.axhline(mean, color="0.5", linestyle="--", linewidth=1)
    for name in strategies:
        entry = entries.get(name, {})
        if entry.get("gap_to_retrain_mean") is None:
            continue
        axis.errorbar(
            entry["speedup_incl_tuning_mean"],
            entry["gap_to_retrain_mean"],
            xerr=entry.get("speedup_incl_tuning_std") or 0.0,
            yerr=entry.get("gap_to_retrain_std") or 0.0,
            fmt="o",
            capsize=3,
            label=name,
        )
    axis.set_xscale("log")
    axis.set_ylim(bottom=0.0)  # the floor band and every gap measured from zero
    axis.set(xlabel="speedup over exact retraining (x, tuning amortised)", ylabel="Avg. Gap to retrain (points)")
    axis.set_title("Gap versus speedup, mean ± std over seeds")
    axis.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    return figure


def test_accuracy_versus_fraction(summary: Mapping[str, Summary], methods: Sequence[str]) -> Figure:
    """Mean test accuracy (± std over seeds) of each method at every forget fraction, retraining included."""
    fractions = sorted(summary, key=float)
    figure = Figure(figsize=(5.4, 3.9))
    axis = figure.subplots()
    for name in methods:
        points = [
            (100 * float(fraction), summary[fraction][name])
            for fraction in fractions
            if summary[fraction].get(name, {}).get("test_acc_mean") is not None
        ]
        if not points:
            continue
        axis.errorbar(
            [x for x, _ in points],
            [100 * entry["test_acc_mean"] for _, entry in points],
            yerr=[100 * (entry.get("test_acc_std") or 0.0) for _, entry in points],
            marker="*" if name == RETRAIN else "o",
            linestyle="-",
            linewidth=2.2 if name == RETRAIN else 1.2,
            capsize=3,
            label=name,
        )
    axis.set_xscale("log")
    axis.set(xlabel="forget set (% of training subjects)", ylabel="test accuracy (%)")
    axis.set_title("Test accuracy versus forget-set size")
    axis.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    return figure
