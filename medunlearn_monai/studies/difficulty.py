"""Easy/hard study: does a strategy forget easy subjects as well as hard ones?

Unlearning methods behave differently on examples the model found easy and on those it had to
memorise (Zhao et al. 2024, "What makes unlearning hard"). The original model's per-item loss ranks
the training subjects; forget requests are drawn from the easiest and the hardest quantile, and every
strategy's gap to exact retraining is reported per quantile, so a biased strategy shows.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medunlearn_monai.forget import SUBJECT_KEY, ForgetRequest, hash_subject
from medunlearn_monai.records import evaluation_path, read_json, record_path
from medunlearn_monai.studies._runs import REQUEST_KEYS, ChildWorkflows, StudyError, split_scores, study_run
from medunlearn_monai.tracking import MLflowTracker
from medunlearn_monai.workflows import config_value

QUANTILES: dict[str, bool] = {"easy": False, "hard": True}  # quantile -> take the highest losses
ROW_METRICS = (
    "gap_to_retrain",
    "forget_acc",
    "retain_acc",
    "test_acc",
    "forget_dice",
    "retain_dice",
    "test_dice",
    "mia_efficacy",
    "mia_loss_auc",
    "unlearn_seconds",
)


def subject_difficulty(model: Path, train_items: Sequence[dict[str, Any]], salt: bytes) -> dict[str, float]:
    """Each training subject's mean per-item loss under ``model`` (its evaluation's retain and forget splits).

    Raises:
        StudyError: when the evaluation does not cover every training subject.
    """
    losses: dict[str, list[float]] = defaultdict(list)
    for split in ("retain", "forget"):
        try:
            scores = split_scores(model, split)
        except StudyError:
            if split == "retain":
                raise
            continue  # evaluated without a request: the retain split holds every training item
        for subject_hash, loss in zip(scores["subject_sha256"], scores["loss"], strict=True):
            losses[subject_hash].append(loss)
    subjects = sorted({str(item[SUBJECT_KEY]) for item in train_items})
    by_hash = {hash_subject(subject, salt): subject for subject in subjects}
    missing = len(set(by_hash) - set(losses))
    if missing:
        raise StudyError(
            f"the evaluation of {model} lacks {missing} of {len(subjects)} training subjects: evaluate the original "
            "model on the same data (and salt) first."
        )
    return {by_hash[subject_hash]: float(np.mean(losses[subject_hash])) for subject_hash in by_hash}


def run_difficulty_study(
    bundle: str,
    strategies: Sequence[str],
    fraction: float = 0.1,
    work_dir: str | Path | None = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Forget the easiest and the hardest ``fraction`` of subjects; retrain, unlearn and evaluate each.

    The original model is ``model_dir/model.pt``, already evaluated (its ``.items.json``); it is copied,
    never modified. Each quantile works in ``work_dir/<quantile>`` (default ``<model_dir>/difficulty``).

    Returns:
        One row per quantile and strategy: ``quantile``, ``strategy`` and the evaluation's metrics of
        :data:`ROW_METRICS` that exist. The rows are logged as ``tables/difficulty_gaps.json`` with
        metrics ``gap_to_retrain_<quantile>_<strategy>`` on a ``workflow=difficulty`` MLflow run.

    Raises:
        StudyError: when no strategy is named or the original model was not evaluated.
        ForgetRequestError: when ``fraction`` selects no subject or is not in (0, 1).
    """
    if not strategies:
        raise StudyError("name at least one strategy to compare.")
    base = {key: value for key, value in overrides.items() if key not in REQUEST_KEYS}
    model_dir = Path(config_value(bundle, "model_dir", **base))
    original = model_dir / "model.pt"
    difficulty = subject_difficulty(
        original, config_value(bundle, "train_items", **base), config_value(bundle, "salt", **base)
    )
    requests = {
        quantile: ForgetRequest.by_score(
            difficulty, fraction, highest, source=f"the {quantile} {fraction:g} of subjects"
        )
        for quantile, highest in QUANTILES.items()
    }
    work_dir = Path(work_dir or model_dir / "difficulty")
    params = {"strategies": ",".join(strategies), "forget_fraction": fraction, "difficulty": "original model loss"}
    started = time.perf_counter()
    with study_run(bundle, "difficulty", overrides, params) as tracker:
        children = ChildWorkflows(bundle, tracker, base, len(QUANTILES) * (2 + 2 * len(strategies)))
        rows = []
        for quantile, request in requests.items():
            folder = work_dir / quantile
            _copy_model(original, folder / "model.pt")
            _run_quantile(children, quantile, request, folder, strategies)
            rows += [_row(quantile, name, folder / f"unlearned_{name}.pt") for name in strategies]
        tracker.log_metrics(
            {f"gap_to_retrain_{row['quantile']}_{row['strategy']}": row.get("gap_to_retrain") for row in rows}
            | {"difficulty_seconds": time.perf_counter() - started}
        )
        _log_rows(tracker, rows)
    return rows


def _run_quantile(
    children: ChildWorkflows, quantile: str, request: ForgetRequest, folder: Path, strategies: Sequence[str]
) -> None:
    """Retrain without the quantile's subjects, unlearn them with every strategy, evaluate everything."""
    shared = {"model_dir": str(folder), "forget_request": request}
    children.run(f"{quantile}: retrain without the forget set", "train", **shared)
    for name in strategies:
        children.run(f"{quantile}: unlearn with {name}", "unlearn", name, **shared)
    for model in ["retrained", *(f"unlearned_{name}" for name in strategies)]:
        children.run(f"{quantile}: evaluate {model}", "evaluate", **shared, model_path=str(folder / f"{model}.pt"))


def _copy_model(original: Path, target: Path) -> None:
    """Copy the original model and its record, so evaluations for this quantile's request sit beside the copy."""
    if not original.is_file():
        raise StudyError(f"original model {original} does not exist: train it first.")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(original, target)
    if record_path(original).is_file():
        shutil.copy2(record_path(original), record_path(target))


def _row(quantile: str, strategy: str, model: Path) -> dict[str, Any]:
    evaluation = read_json(evaluation_path(model))
    return {"quantile": quantile, "strategy": strategy} | {
        name: evaluation[name] for name in ROW_METRICS if name in evaluation
    }


def _log_rows(tracker: MLflowTracker, rows: list[dict[str, Any]]) -> None:
    """The rows as ``tables/difficulty_gaps.json`` and a grouped bar plot of the gap per quantile."""
    with tempfile.TemporaryDirectory() as scratch:
        table = Path(scratch) / "difficulty_gaps.json"
        table.write_text(json.dumps(rows, indent=2))
        tracker.log_artifact(table, "tables")
    strategies = list(dict.fromkeys(row["strategy"] for row in rows))
    figure = Figure(figsize=(1.2 * len(strategies) + 3, 3.5))
    axis = figure.subplots()
    width = 0.8 / len(QUANTILES)
    for offset, quantile in enumerate(QUANTILES):
        gaps = {row["strategy"]: row.get("gap_to_retrain", np.nan) for row in rows if row["quantile"] == quantile}
        positions = np.arange(len(strategies)) + offset * width
        axis.bar(positions, [gaps.get(name, np.nan) for name in strategies], width, label=f"{quantile} subjects")
    axis.set_xticks(np.arange(len(strategies)) + width * (len(QUANTILES) - 1) / 2, strategies)
    axis.set(ylabel="gap to retrain (points)", title="Gap to exact retraining by difficulty of the forget set")
    axis.legend()
    tracker.log_figure(figure, "plots/gap_by_difficulty.png")
