"""The comparison of methods with exact retraining: which runs it reads, its columns and how they are written.

One place for what ``medunlearn compare``, the demo, the HTML report and the benchmarks show: the latest finished
evaluation of every method (:func:`latest_evaluations`, reading every page of MLflow's search), the columns
(:class:`Column`: key, headers, unit, meaning) and their cells in the fixed-width text table (:func:`format_table`)
and in HTML (:func:`html_cell`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities import Run

from medunlearn_monai.certificate.issue import APPROXIMATE, EXACT
from medunlearn_monai.tracking import PARENT_RUN_TAG, run_datasets, tracking_uri

# Runs per request when reading an experiment; MLflow's search answers at most this many and a token for the rest.
PAGE_SIZE = 1000
REFERENCE_METHODS = ("original", "retrain")  # first in the table, in this order; the others follow by name
EVALUATIONS = "params.workflow = 'evaluate' and attributes.status = 'FINISHED'"
DATASET_CONTEXTS = ("train", "retain", "forget", "test")  # MLflow dataset contexts a workflow run logs


@dataclass(frozen=True)
class Column:
    """One column of the comparison.

    Attributes:
        key: metric (or row field) the column shows.
        header: its header in the HTML report.
        unit: how values are written: ``percent`` (fractions shown times 100), ``fraction``, ``pct`` (already in
            percent), ``points``, ``seconds``, ``factor`` or ``text``.
        meaning: what it means, for the report's glossary.
        short_header: its header in the fixed-width text table; None for a column only the report names, which
            that table shows under its key as a plain value.
    """

    key: str
    header: str
    unit: str
    meaning: str
    short_header: str | None = None


_SPLIT_MEANING = {
    "retain": "the training data that stays",
    "forget": "the forgotten subjects' data",
    "test": "patients never used in training",
}


def _per_split(metric: str, header: str, unit: str, meaning: str, in_text_table: bool = True) -> tuple[Column, ...]:
    return tuple(
        Column(
            f"{split}_{metric}",
            f"{split} {header}",
            unit,
            f"{meaning} on {where}",
            f"{split} {header}" if in_text_table else None,
        )
        for split, where in _SPLIT_MEANING.items()
    )


METRIC_COLUMNS: tuple[Column, ...] = (
    *_per_split("acc", "acc", "percent", "accuracy (%)"),
    *_per_split("auc", "AUC", "fraction", "ROC AUC", in_text_table=False),
    Column("test_auc_gap", "test AUC gap F-M", "fraction", "female minus male test AUC (0 = the same for both sexes)"),
    *_per_split("dice", "Dice", "fraction", "Dice overlap"),
    Column(
        "forget_dice_decrease_pct",
        "forget Dice decrease %",
        "pct",
        "how much forget Dice fell from the original",
        "forget decrease %",
    ),
    Column(
        "retain_dice_kept_pct", "retain Dice kept %", "pct", "share of the original retain Dice kept", "retain kept %"
    ),
    *_per_split("mae", "MAE", "fraction", "mean absolute error"),
    Column(
        "mia_efficacy",
        "MIA efficacy",
        "percent",
        "share (%) of forgotten items an SVC confidence attack judges non-members; higher = more forgotten",
        "MIA",
    ),
    Column(
        "mia_loss_auc",
        "loss-attack AUC",
        "fraction",
        "AUC of a loss-threshold attack telling forgotten from test items; 0.5 = indistinguishable",
    ),
    Column(
        "mia_loss_tpr_at_1pct_fpr",
        "attack TPR @1% FPR",
        "percent",
        "share (%) of forgotten items the loss attack flags while wrongly flagging 1% of test items",
    ),
    Column(
        "ulira_auc",
        "U-LiRA AUC",
        "fraction",
        "AUC of the U-LiRA attack, which compares with shadow models trained with and without each item",
    ),
    Column(
        "gap_to_retrain",
        "gap to retrain",
        "points",
        "mean absolute difference from retrain over the quality and attack scores, in points; 0 = like retraining",
        "Avg. Gap",
    ),
    Column(
        "unlearn_seconds",
        "seconds",
        "seconds",
        "wall seconds of the unlearning (for retrain: retraining) run",
        "seconds",
    ),
    Column("speedup_vs_retrain", "speedup", "factor", "retrain seconds divided by the method's seconds", "speedup"),
    Column("tuning_seconds", "tuning seconds", "seconds", "wall seconds of the method's hyperparameter search"),
    Column(
        "speedup_vs_retrain_incl_tuning",
        "speedup incl. tuning",
        "factor",
        "retrain seconds divided by the method's seconds plus its tuning seconds",
    ),
)
# Text columns, in front of the numbers; their values come from the package's own vocabulary and file names.
TEXT_COLUMNS: tuple[Column, ...] = (
    Column(
        "guarantee",
        "guarantee",
        "text",
        f"{EXACT}: trained without the forgotten data (retrain, SISA); {APPROXIMATE}: edited from weights trained "
        "on it, so only the scores say how far it forgot",
    ),
    Column("gap_reference", "gap against", "text", "the model file the gap to retrain was measured against"),
    Column(
        "data",
        "data",
        "text",
        "the evaluation's MLflow datasets by salted digest: retain = hash of the retained items, forget = the "
        "request's hash (as in the certificate), test = hash of the test items; the same digest means the same data",
        "data (MLflow dataset digests)",
    ),
)
# The text table's metric columns (:func:`comparison_rows`), by task; rows end with ``data``.
CLASSIFICATION_KEYS = (
    "retain_acc",
    "forget_acc",
    "test_acc",
    "mia_efficacy",
    "gap_to_retrain",
    "unlearn_seconds",
    "speedup_vs_retrain",
)
SEGMENTATION_KEYS = (
    "retain_dice",
    "forget_dice",
    "test_dice",
    "forget_dice_decrease_pct",
    "retain_dice_kept_pct",
    "forget_mae",
    "retain_mae",
    "gap_to_retrain",
    "unlearn_seconds",
    "speedup_vs_retrain",
)
_TEXT_TABLE = {column.key: column for column in (*METRIC_COLUMNS, *TEXT_COLUMNS) if column.short_header}


def search_runs(client: mlflow.MlflowClient, experiment_name: str, filter_string: str = "") -> list[Run]:
    """Every run of ``experiment_name`` that matches ``filter_string``, newest first, reading every page.

    Raises:
        ValueError: when the experiment does not exist.
    """
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ValueError(f"{_where(client, experiment_name)} does not exist: check the name and MLFLOW_TRACKING_URI.")
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            filter_string,
            max_results=PAGE_SIZE,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def latest_evaluations(
    client: mlflow.MlflowClient, experiment_name: str, runs: Sequence[Run] | None = None
) -> dict[str, Run]:
    """Method -> its latest finished ``workflow=evaluate`` run, reference methods first, then by name.

    A child run (a tuning trial, a study's shadow model) scores one candidate, not the method as delivered: it is
    left out.

    Args:
        client: the store.
        experiment_name: the experiment.
        runs: its runs, newest first, when already read (see :func:`search_runs`); else its finished evaluations
            are searched.

    Raises:
        ValueError: when the experiment does not exist or holds no finished evaluation.
    """
    if runs is None:
        runs = search_runs(client, experiment_name, EVALUATIONS)
    latest = latest_by_strategy(
        run
        for run in runs
        if run.info.status == "FINISHED" and workflow_of(run) == "evaluate" and PARENT_RUN_TAG not in run.data.tags
    )
    if not latest:
        where = _where(client, experiment_name)
        raise ValueError(f"{where} holds no finished evaluation run (params.workflow = 'evaluate').")
    order = {name: index for index, name in enumerate(REFERENCE_METHODS)}
    return {name: latest[name] for name in sorted(latest, key=lambda name: (order.get(name, len(order)), name))}


def latest_by_strategy(runs_newest_first: Iterable[Run]) -> dict[str, Run]:
    """Strategy (param ``strategy``, else ``unknown``) -> its first run in ``runs_newest_first``."""
    latest: dict[str, Run] = {}
    for run in runs_newest_first:
        latest.setdefault(run.data.params.get("strategy", "unknown"), run)
    return latest


def workflow_of(run: Run) -> str:
    """The run's param ``workflow`` (``other`` when it has none)."""
    return run.data.params.get("workflow", "other")


def comparison_rows(experiment_name: str) -> list[dict[str, Any]]:
    """The latest finished evaluation of every method in an experiment of the tracking store: one row of metrics each.

    Columns are ``method``, :data:`CLASSIFICATION_KEYS`, or :data:`SEGMENTATION_KEYS` for an experiment whose
    evaluations report Dice, then ``data``: the evaluation's datasets (:func:`data_summary`).

    Raises:
        ValueError: when the experiment does not exist or holds no finished evaluation.
    """
    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    latest = latest_evaluations(client, experiment_name)
    segmentation = any("retain_dice" in run.data.metrics for run in latest.values())
    keys = SEGMENTATION_KEYS if segmentation else CLASSIFICATION_KEYS
    return [
        {"method": name, **{key: run.data.metrics.get(key) for key in keys}, "data": data_summary(run)}
        for name, run in latest.items()
    ]


def data_summary(run: Run, width: int = 8) -> str | None:
    """A run's datasets in one short cell, e.g. ``retain 3f2a9c01 · forget 88be0d4e``; None without datasets."""
    digests = run_datasets(run)
    shown = [f"{context} {digests[context][:width]}" for context in DATASET_CONTEXTS if context in digests]
    return " · ".join(shown) or None


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of the rows' columns (those of the first row, in its order) under their short headers.

    Cells (:func:`table_cell`): accuracies and MIA in percent, Dice and MAE as fractions, gap in points, seconds,
    speedup as a factor.
    """
    columns = list(rows[0]) if rows else ["method"]
    header = [_TEXT_TABLE[key].short_header if key in _TEXT_TABLE else key for key in columns]
    table = [header] + [[table_cell(key, row.get(key)) for key in columns] for row in rows]
    widths = [max(len(line[column]) for line in table) for column in range(len(columns))]
    lines = [
        "  ".join(
            text.rjust(width) if column else text.ljust(width)
            for column, (text, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def table_cell(key: str, value: Any) -> str:
    """A value as the text table writes it: ``-`` when missing; percent, fraction and pct columns as in the report,
    a factor as ``6.9x``; points, seconds, text and fields that are no column of the text table as given, floats
    with two decimals."""
    if value is None:
        return "-"
    unit = _TEXT_TABLE[key].unit if key in _TEXT_TABLE else "text"
    if unit in ("percent", "fraction", "pct"):
        return _number(unit, value)
    if unit == "factor":
        return f"{_number(unit, value)}x"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def html_cell(column: Column, value: Any) -> str:
    """A value as the HTML report writes it, escaped: ``–`` when missing (or an empty text); percent and points with
    one or two decimals, fractions with three, a factor as ``6.9×``, the rest with one decimal."""
    if value is None or (column.unit == "text" and not value):
        return "–"
    if column.unit == "text":
        return html.escape(str(value), quote=True)
    return f"{_number(column.unit, value)}×" if column.unit == "factor" else _number(column.unit, value)


def _number(unit: str, value: float) -> str:
    if unit == "percent":
        return f"{100 * value:.1f}"
    if unit == "fraction":
        return f"{value:.3f}"
    if unit == "points":
        return f"{value:.2f}"
    return f"{value:.1f}"


def _where(client: mlflow.MlflowClient, experiment_name: str) -> str:
    return f"MLflow experiment '{experiment_name}' at {client.tracking_uri}"
