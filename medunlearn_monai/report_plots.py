"""The report's plots: matplotlib ``Figure`` objects (no pyplot state) and their PNG as base64 for an HTML page."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

RETRAIN = "retrain"
ORIGINAL = "original"
# label and scale per quality metric family: accuracies read as percent, as in the comparison table.
QUALITY_LABELS: dict[str, tuple[str, float]] = {
    "acc": ("accuracy (%)", 100.0),
    "auc": ("AUC", 1.0),
    "dice": ("Dice", 1.0),
}
_REFERENCE_STYLES = {
    RETRAIN: {"marker": "*", "s": 280, "color": "tab:red", "zorder": 4},
    ORIGINAL: {"marker": "s", "s": 80, "color": "0.45", "zorder": 3},
}
# red and grey are the references'; markers vary too, so methods stay apart in grey print and for colour-blind readers
_METHOD_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
_METHOD_MARKERS = ("o", "D", "^", "v", "P", "X", "<", ">")
_SEX_COLORS = {"female": "tab:purple", "male": "tab:green"}
_QUANTILE_COLORS = {"easy": "tab:cyan", "hard": "tab:orange"}

Row = Mapping[str, Any]


def png_base64(figure: Figure) -> str:
    """The figure rendered as PNG (100 dpi, tight box), base64-encoded for a ``data:`` URL."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def quality_tradeoff(rows: Sequence[Row], family: str) -> Figure:
    """Forget (x) versus retain (y) quality of every method with both; retrain is the star to be near.

    Args:
        rows: comparison rows with ``method``, ``forget_<family>`` and ``retain_<family>``.
        family: ``acc``, ``auc`` or ``dice``.
    """
    label, scale = QUALITY_LABELS[family]
    points = _points(rows, f"forget_{family}", f"retain_{family}", scale, scale)
    figure = Figure(figsize=(4.6, 3.8))
    axis = figure.subplots()
    _scatter(axis, points, _styles(rows))
    _widen(axis, "x", 0.1 * scale, scale)
    _widen(axis, "y", 0.1 * scale, scale)
    if RETRAIN in points:
        x, y = points[RETRAIN]
        axis.axvline(x, color=_REFERENCE_STYLES[RETRAIN]["color"], linestyle="--", alpha=0.35)
        axis.axhline(y, color=_REFERENCE_STYLES[RETRAIN]["color"], linestyle="--", alpha=0.35)
    axis.set(xlabel=f"forget {label}", ylabel=f"retain {label}", title=f"Forget vs retain {label}")
    _legend_beside(axis)
    return figure


def quality_cost(rows: Sequence[Row], family: str) -> Figure:
    """Test quality (y) versus unlearning seconds (x, log scale); hollow markers add the tuning seconds.

    Args:
        rows: comparison rows with ``method``, ``test_<family>``, ``unlearn_seconds`` and optionally
            ``tuning_seconds``.
        family: ``acc``, ``auc`` or ``dice``.
    """
    label, scale = QUALITY_LABELS[family]
    points = _points(rows, "unlearn_seconds", f"test_{family}", 1.0, scale)
    styles = _styles(rows)
    figure = Figure(figsize=(4.6, 3.8))
    axis = figure.subplots()
    _scatter(axis, points, styles)
    _widen(axis, "y", 0.1 * scale, scale)
    for row in rows:
        if row["method"] in points and row.get("tuning_seconds") is not None:
            x, y = points[row["method"]]
            style = styles[row["method"]]
            total = x + row["tuning_seconds"]
            axis.plot([x, total], [y, y], color=style["color"], linestyle=":", alpha=0.7)
            hollow = {"marker": style["marker"], "s": style["s"], "facecolors": "none", "edgecolors": style["color"]}
            axis.scatter([total], [y], label=f"{row['method']} incl. tuning", **hollow)
    axis.set_xscale("log")
    # seconds as plain numbers at 1-2-5 steps: matplotlib's default minor labels (3x10^1, 4x10^1) overprint
    axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set(xlabel="seconds (log scale)", ylabel=f"test {label}", title=f"Test {label} vs cost")
    _legend_beside(axis)
    return figure


def difficulty_gaps(gaps: Sequence[Row]) -> Figure:
    """Gap to retrain per strategy, one bar for the easy and one for the hard quantile.

    Args:
        gaps: rows with ``strategy``, ``quantile`` (``easy`` or ``hard``) and ``gap_to_retrain``.
    """
    strategies = list(dict.fromkeys(row["strategy"] for row in gaps))
    values = {(row["strategy"], row["quantile"]): row["gap_to_retrain"] for row in gaps}
    figure = Figure(figsize=(max(5.0, 1.1 * len(strategies) + 2), 3.8))
    axis = figure.subplots()
    _grouped_bars(axis, strategies, _QUANTILE_COLORS, values)
    axis.set(ylabel="gap to retrain (points)", title="Gap to retrain by forget-set difficulty")
    _legend_beside(axis)
    return figure


def auc_by_sex(rows: Sequence[Row], splits: Sequence[str]) -> Figure:
    """AUC among female and male patients per method, one panel per split (``test``, ``forget``).

    Args:
        rows: comparison rows with ``method`` and ``<split>_auc_female`` / ``<split>_auc_male``.
        splits: the splits to draw.
    """
    methods = [row["method"] for row in rows]
    figure = Figure(figsize=(max(4.0, 0.9 * len(methods) + 1.5) * len(splits), 3.8), layout="constrained")
    axes = figure.subplots(1, len(splits), squeeze=False)[0]
    for axis, split in zip(axes, splits, strict=True):
        values = {
            (row["method"], sex): row[f"{split}_auc_{sex}"]
            for row in rows
            for sex in _SEX_COLORS
            if row.get(f"{split}_auc_{sex}") is not None
        }
        _grouped_bars(axis, methods, _SEX_COLORS, values)
        axis.set_ylim(max(0.0, min(values.values(), default=0.0) - 0.1), 1.04)  # room for the labels above 1.0
        axis.set(ylabel="AUC", title=f"{split} AUC by sex")
    _legend_beside(axes[-1])
    return figure


def _points(rows: Sequence[Row], x_key: str, y_key: str, scale_x: float, scale_y: float) -> dict:
    return {
        row["method"]: (scale_x * row[x_key], scale_y * row[y_key])
        for row in rows
        if row.get(x_key) is not None and row.get(y_key) is not None
    }


def _styles(rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Marker style per method, by its place in the table, so a method looks the same in every plot."""
    methods = [row["method"] for row in rows if row["method"] not in _REFERENCE_STYLES]
    styles = {
        method: {
            "marker": _METHOD_MARKERS[index % len(_METHOD_MARKERS)],
            "color": _METHOD_COLORS[index % len(_METHOD_COLORS)],
            "s": 70,
            "zorder": 3,
        }
        for index, method in enumerate(methods)
    }
    return {**_REFERENCE_STYLES, **styles}


def _scatter(axis: Any, points: Mapping[str, tuple[float, float]], styles: Mapping[str, Mapping[str, Any]]) -> None:
    for method, (x, y) in points.items():
        label = f"{method} (target)" if method == RETRAIN else method
        axis.scatter([x], [y], label=label, **styles[method])
    axis.margins(0.15)
    axis.grid(alpha=0.3, which="both")


def _legend_beside(axis: Any) -> None:
    """The legend right of the plot, where it hides no point or bar (points of similar methods often coincide)."""
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False, borderaxespad=0)


def _widen(axis: Any, which: str, span: float, upper: float) -> None:
    """Show at least ``span`` on an axis so that differences of a fraction of a point do not fill the plot,
    without going far past the metric's ``upper`` bound."""
    limits, set_limits = (axis.get_xlim, axis.set_xlim) if which == "x" else (axis.get_ylim, axis.set_ylim)
    low, high = limits()
    if high - low >= span:
        return
    high = min((low + high + span) / 2, upper + 0.05 * span)
    set_limits(high - span, high)


def _grouped_bars(
    axis: Any, groups: Sequence[str], series: Mapping[str, str], values: Mapping[tuple[str, str], float]
) -> None:
    """One group of bars per entry of ``groups``, one bar per series (name -> colour) where ``values`` has one."""
    width = 0.8 / len(series)
    for index, (name, color) in enumerate(series.items()):
        positions, heights = [], []
        for position, group in enumerate(groups):
            if (group, name) in values:
                positions.append(position + (index - (len(series) - 1) / 2) * width)
                heights.append(values[group, name])
        bars = axis.bar(positions, heights, width, label=name, color=color)
        axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.margins(y=0.12)
    axis.set_xticks(range(len(groups)), list(groups), rotation=20, ha="right")
    axis.grid(axis="y", alpha=0.3)
