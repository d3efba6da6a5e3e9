"""The comparison table: its text and HTML cells pinned, and the run selection reading every page of MLflow's search."""

import re

import mlflow
import pytest
from mlflow.entities import Metric, Param

from medunlearn_monai import comparison
from medunlearn_monai.comparison import (
    EVALUATIONS,
    METRIC_COLUMNS,
    TEXT_COLUMNS,
    comparison_rows,
    format_table,
    html_cell,
    search_runs,
)
from medunlearn_monai.report import read_experiment
from medunlearn_monai.tracking import PARENT_RUN_TAG, tracking_uri

DIGESTS = "retain 3f2a9c01 · forget 88be0d4e · test c0ffee00"
CLASSIFICATION_ROWS = [
    {"method": "original", "retain_acc": 0.9987, "forget_acc": 1.0, "test_acc": 0.7443, "mia_efficacy": 0.0,
     "gap_to_retrain": None, "unlearn_seconds": None, "speedup_vs_retrain": None, "data": DIGESTS},
    {"method": "retrain", "retain_acc": 1.0, "forget_acc": 0.7712, "test_acc": 0.7231, "mia_efficacy": 0.4105,
     "gap_to_retrain": 0.0, "unlearn_seconds": 55.1875, "speedup_vs_retrain": 1.0, "data": DIGESTS},
    {"method": "salun", "retain_acc": 0.9982, "forget_acc": 0.8695, "test_acc": 0.6624, "mia_efficacy": 0.3899,
     "gap_to_retrain": 4.5812, "unlearn_seconds": 8.004, "speedup_vs_retrain": 6.8953, "data": None},
]  # fmt: skip
SEGMENTATION_ROWS = [
    {"method": "retrain", "retain_dice": 0.94, "forget_dice": 0.932, "test_dice": 0.925,
     "forget_dice_decrease_pct": None, "retain_dice_kept_pct": None, "forget_mae": 0.0204, "retain_mae": 0.0187,
     "gap_to_retrain": 0.0, "unlearn_seconds": 300.0, "speedup_vs_retrain": 1.0, "data": None},
    {"method": "max_loss", "retain_dice": 0.7101, "forget_dice": 0.5149, "test_dice": 0.7099,
     "forget_dice_decrease_pct": 44.6344, "retain_dice_kept_pct": 76.3548, "forget_mae": 0.1234, "retain_mae": 0.05,
     "gap_to_retrain": 18.2567, "unlearn_seconds": 40.0, "speedup_vs_retrain": 7.5, "data": "forget efefefef"},
]  # fmt: skip
DIFFICULTY_ROWS = [  # as `medunlearn difficulty` prints them: fields that are no column of the text table too
    {"method": "easy: rl", "quantile": "easy", "strategy": "rl", "gap_to_retrain": 3.1, "forget_acc": 0.96,
     "retain_acc": 0.99, "test_acc": 0.7, "mia_efficacy": 0.45, "mia_loss_auc": 0.5612, "unlearn_seconds": 6.0},
    {"method": "hard: rl", "quantile": "hard", "strategy": "rl", "gap_to_retrain": 9.4, "forget_acc": 0.71,
     "retain_acc": 0.98, "test_acc": 0.69, "mia_efficacy": 0.3, "mia_loss_auc": 0.6, "unlearn_seconds": 6.5},
]  # fmt: skip


def test_text_table_is_pinned_byte_for_byte():
    """The table ``medunlearn compare`` and the demo print, as it was before the columns moved here."""
    assert format_table(CLASSIFICATION_ROWS) == (
        "method    retain acc  forget acc  test acc   MIA  Avg. Gap  seconds  speedup                      data (MLflow dataset digests)\n"  # noqa: E501
        "-------------------------------------------------------------------------------------------------------------------------------\n"  # noqa: E501
        "original        99.9       100.0      74.4   0.0         -        -        -  retain 3f2a9c01 · forget 88be0d4e · test c0ffee00\n"  # noqa: E501
        "retrain        100.0        77.1      72.3  41.0      0.00    55.19     1.0x  retain 3f2a9c01 · forget 88be0d4e · test c0ffee00\n"  # noqa: E501
        "salun           99.8        87.0      66.2  39.0      4.58     8.00     6.9x                                                  -"  # noqa: E501
    )
    assert format_table(SEGMENTATION_ROWS) == (
        "method    retain Dice  forget Dice  test Dice  forget decrease %  retain kept %  forget MAE  retain MAE  Avg. Gap  seconds  speedup  data (MLflow dataset digests)\n"  # noqa: E501
        "------------------------------------------------------------------------------------------------------------------------------------------------------------------\n"  # noqa: E501
        "retrain         0.940        0.932      0.925                  -              -       0.020       0.019      0.00   300.00     1.0x                              -\n"  # noqa: E501
        "max_loss        0.710        0.515      0.710               44.6           76.4       0.123       0.050     18.26    40.00     7.5x                forget efefefef"  # noqa: E501
    )
    assert format_table(DIFFICULTY_ROWS) == (
        "method    quantile  strategy  Avg. Gap  forget acc  retain acc  test acc   MIA  mia_loss_auc  seconds\n"
        "-----------------------------------------------------------------------------------------------------\n"
        "easy: rl      easy        rl      3.10        96.0        99.0      70.0  45.0          0.56     6.00\n"
        "hard: rl      hard        rl      9.40        71.0        98.0      69.0  30.0          0.60     6.50"
    )
    assert format_table([]) == "method\n------"


def test_html_cells_write_each_unit_as_the_report_did():
    columns = {column.key: column for column in (*METRIC_COLUMNS, *TEXT_COLUMNS)}
    cells = {
        key: [html_cell(columns[key], value) for value in (None, 0.5, 12.345, 0.0)]
        for key in ("test_acc", "test_auc", "retain_dice_kept_pct", "gap_to_retrain", "unlearn_seconds")
    }
    assert cells == {
        "test_acc": ["–", "50.0", "1234.5", "0.0"],
        "test_auc": ["–", "0.500", "12.345", "0.000"],
        "retain_dice_kept_pct": ["–", "0.5", "12.3", "0.0"],
        "gap_to_retrain": ["–", "0.50", "12.35", "0.00"],
        "unlearn_seconds": ["–", "0.5", "12.3", "0.0"],
    }
    assert [html_cell(columns["speedup_vs_retrain"], value) for value in (None, 6.8953)] == ["–", "6.9×"]
    assert [html_cell(columns["data"], value) for value in (None, "", "<b>&")] == ["–", "–", "&lt;b&gt;&amp;"]


def _log(client, experiment_id, start_time, workflow, strategy, metrics, status="FINISHED", tags=None):
    """A run at a chosen start time, so the order of MLflow's pages is known."""
    run_id = client.create_run(experiment_id, start_time=start_time, tags=tags or {}).info.run_id
    params = [Param("workflow", workflow), Param("strategy", strategy)]
    metrics = [Metric(key, value, start_time, 0) for key, value in metrics.items()]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.set_terminated(run_id, status)
    return run_id


def test_the_selection_reads_every_page_of_runs(monkeypatch):
    """A strategy whose only evaluation is on a later page of MLflow's search is still in the table and the report."""
    client = mlflow.MlflowClient(tracking_uri())
    experiment_id = client.create_experiment("paged")
    ft = _log(client, experiment_id, 1_000, "evaluate", "ft", {"forget_acc": 0.9})  # the oldest run
    _log(client, experiment_id, 2_000, "evaluate", "rl", {"forget_acc": 0.1})
    _log(client, experiment_id, 3_000, "evaluate", "retrain", {"forget_acc": 0.3})
    _log(client, experiment_id, 4_000, "evaluate", "rl", {"forget_acc": 0.2})
    tune = _log(client, experiment_id, 5_000, "tune", "ft", {"tuning_seconds": 9.0})
    _log(client, experiment_id, 6_000, "evaluate", "ft", {"forget_acc": 0.5}, tags={PARENT_RUN_TAG: tune})  # a trial
    _log(client, experiment_id, 7_000, "evaluate", "ft", {"forget_acc": 0.6}, status="FAILED")
    monkeypatch.setattr(comparison, "PAGE_SIZE", 2)
    first_page = client.search_runs(
        [experiment_id], EVALUATIONS, max_results=2, order_by=["attributes.start_time DESC"]
    )
    assert first_page.token and ft not in {run.info.run_id for run in first_page}
    every_run = search_runs(client, "paged")
    assert len(every_run) == 7 and every_run[-1].info.run_id == ft

    rows = comparison_rows("paged")
    assert [(row["method"], row["forget_acc"]) for row in rows] == [("retrain", 0.3), ("ft", 0.9), ("rl", 0.2)]
    evaluations = read_experiment(client, "paged").evaluations
    assert list(evaluations) == ["retrain", "ft", "rl"] and evaluations["ft"].info.run_id == ft


def test_a_missing_experiment_or_evaluation_fails_clearly():
    with pytest.raises(ValueError, match=rf"'nope' at {re.escape(tracking_uri())} does not exist"):
        comparison_rows("nope")
    client = mlflow.MlflowClient(tracking_uri())
    _log(client, client.create_experiment("trained"), 1_000, "train", "original", {"train_seconds": 3.0})
    with pytest.raises(ValueError, match=r"'trained' .* holds no finished evaluation run"):
        comparison_rows("trained")
