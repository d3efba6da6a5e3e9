"""Run an evaluator on retain / forget / test data, score the model as an unlearning result, write and log it.

The scores themselves are :mod:`medunlearn_monai.metrics`' (arrays and tensors in, numbers out); this module runs
the evaluator per split, keeps what the scores need, and writes ``<model>.eval.json`` and ``<model>.items.json``
(:mod:`medunlearn_monai.records`) and logs them to the evaluation's MLflow run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator
from torch.utils.data import DataLoader

from medunlearn_monai.forget import hash_subject, load_salt
from medunlearn_monai.metrics.gap import GAP_METRICS, avg_gap
from medunlearn_monai.metrics.loss_attack import loss_attack
from medunlearn_monai.records import (
    REFERENCE_KEY,
    REQUEST_KEY,
    evaluation_path,
    file_sha256,
    item_scores_path,
    read_json,
    read_record,
    record_path,
    write_json,
)
from medunlearn_monai.tracking import MLflowTracker

logger = logging.getLogger(__name__)
UNLEARNING_WORKFLOWS = ("retrain", "unlearn")
MIA_SPLITS = ("retain", "forget", "test")


class ReferenceMismatchError(ValueError):
    """A reference model (retrained or original) was evaluated for a different forget request."""


class UnlearningEvaluation:
    """Run ``evaluator`` on each split and score the model it holds as an unlearning result.

    Metrics come out as ``<split>_<name>`` for every metric of the evaluator, plus what the task
    adds (see the subclasses), ``unlearn_seconds`` for retrained and unlearned models, and
    ``gap_to_retrain`` (mean absolute difference over :attr:`gap_metrics`, in points) and
    ``speedup_vs_retrain`` once the retrained reference has been evaluated. The result is written
    beside the model (``<model>.eval.json``, with the request hash, the model file's SHA-256 and
    ``reference_model``, the file name of the reference the gap was measured against, None without a
    gap) and, with a tracker, logged (``reference_model`` as a param).

    Subclasses also keep each item's loss and confidence (:meth:`_keep_item_scores`); these go,
    with the salted hash of the item's subject, to ``<model>.items.json`` and the run's ``tables/``
    artifacts, and give the loss-threshold attack ``mia_loss_auc``, ``mia_loss_tpr_at_1pct_fpr``
    and ``mia_loss_tpr_at_0.1pct_fpr`` (forget items = members, test items = non-members) when
    retain, forget and test data exist. Items must carry a ``subject`` key.

    Args:
        evaluator: a MONAI evaluator holding the network to score.
        loaders: split name -> data loader; empty splits are skipped.
        model_path: the evaluated model file; its record (``<model>.json``) tells how it was made.
        reference_model: the model's exact counterpart to compare with (the retrained model; for SISA the
            sharded retraining), or None.
        tracker: the MLflow run of this evaluation, or None.
        seed: seed of any sampling in the scores.
        forget_request_sha256: hash of the forget request the splits come from.
        salt: salt of the subject hashes; None reads the deployment's salt (:func:`medunlearn_monai.forget.load_salt`).
    """

    gap_metrics: tuple[str, ...] = GAP_METRICS

    def __init__(
        self,
        evaluator: SupervisedEvaluator,
        loaders: Mapping[str, DataLoader],
        model_path: str | os.PathLike,
        reference_model: str | os.PathLike | None = None,
        tracker: MLflowTracker | None = None,
        seed: int = 0,
        forget_request_sha256: str | None = None,
        salt: bytes | None = None,
    ):
        self.evaluator = evaluator
        self.loaders = dict(loaders)
        self.model_path = Path(model_path)
        self.reference_model = distinct_model(reference_model, self.model_path)
        self.tracker = tracker
        self.seed = seed
        self.forget_request_sha256 = forget_request_sha256
        self.salt = load_salt() if salt is None else salt
        self.item_scores: dict[str, dict[str, list]] = {}
        self._subjects: list[str] = []
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._keep_subjects)

    def run(self) -> dict[str, float]:
        """Evaluate every split, score, save and log; returns the metrics."""
        metrics: dict[str, float] = {}
        self.item_scores = {}
        for split, loader in self.loaders.items():
            if len(loader.dataset) == 0:
                continue
            split_metrics = self._evaluate_split(split, loader)
            metrics.update({f"{split}_{name}": value for name, value in split_metrics.items()})
        metrics.update(self._model_scores(metrics))
        metrics.update(self._loss_attack_scores())
        metrics.update(self._cost_and_gap(metrics))
        reference = self.reference_model.name if "gap_to_retrain" in metrics else None
        record = {REQUEST_KEY: self.forget_request_sha256, "model_sha256": file_sha256(self.model_path)}
        write_json(evaluation_path(self.model_path), {**metrics, **record, REFERENCE_KEY: reference})
        items_path = item_scores_path(self.model_path)
        write_json(items_path, {REQUEST_KEY: self.forget_request_sha256, "splits": self.item_scores})
        if self.tracker:
            self.tracker.log_params({REFERENCE_KEY: reference or "none"})
            self.tracker.log_metrics(metrics)
            self.tracker.log_artifact(items_path, "tables")
            self._log_artifacts()
        return metrics

    def _evaluate_split(self, split: str, loader: DataLoader) -> dict[str, float]:
        self._subjects = []
        # One evaluator serves all splits; ignite keeps the previous epoch length unless it is reset.
        self.evaluator.data_loader = loader
        self.evaluator.state.epoch_length = len(loader)
        self.evaluator.run()
        return {name: float(value) for name, value in self.evaluator.state.metrics.items()}

    def _keep_subjects(self, engine: Engine) -> None:
        batch = engine.state.batch
        try:
            # MONAI evaluators decollate the batch into items unless built with decollate=False.
            subjects = batch["subject"] if isinstance(batch, Mapping) else [item["subject"] for item in batch]
        except KeyError as error:
            raise KeyError("evaluation items need a 'subject' key for their per-item scores.") from error
        self._subjects.extend(str(subject) for subject in subjects)

    def _keep_item_scores(self, split: str, losses: Sequence[float], confidences: Sequence[float]) -> None:
        """Store one split's per-item loss and confidence beside the salted hashes of the items' subjects.

        Raises:
            ValueError: when the scores and the subjects seen in the split differ in number.
        """
        if not len(losses) == len(confidences) == len(self._subjects):
            raise ValueError(
                f"the {split} split has {len(self._subjects)} items but {len(losses)} losses and "
                f"{len(confidences)} confidences."
            )
        self.item_scores[split] = {
            "subject_sha256": [hash_subject(subject, self.salt) for subject in self._subjects],
            "loss": [float(value) for value in losses],
            "confidence": [float(value) for value in confidences],
        }

    def _loss_attack_scores(self) -> dict[str, float]:
        """Loss-threshold attack, forget items against test items, when all evaluation splits were scored."""
        losses = self._known_item_scores("loss")
        if not losses:
            return {}
        scores = loss_attack(losses["forget"], losses["test"])
        return {f"mia_loss_{name}": value for name, value in scores.items()}

    def _known_item_scores(self, kind: str) -> dict[str, np.ndarray]:
        """The retain, forget and test items' ``kind`` (``"loss"`` or ``"confidence"``), items without one left out.

        A multi-label item without any known label has NaN loss and confidence and so nothing to tell about
        membership; every attack leaves such items out alike. Empty when a split was not scored, or (with a
        warning) when one keeps no item.
        """
        if not all(split in self.item_scores for split in MIA_SPLITS):
            return {}
        scores = {}
        for split in MIA_SPLITS:
            values = np.asarray(self.item_scores[split][kind], dtype=float)
            scores[split] = values[np.isfinite(values)]
        empty = [split for split, values in scores.items() if values.size == 0]
        if empty:
            logger.warning("No membership inference on %s: no %s item has a known label.", kind, " or ".join(empty))
            return {}
        return scores

    def _model_scores(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Task-specific scores computed once every split was evaluated; none by default."""
        return {}

    def _log_artifacts(self) -> None:
        """Task-specific plots and tables for the tracker; none by default."""

    def _reference_evaluation(self, model: Path, role: str) -> dict[str, Any]:
        """The stored evaluation of ``model`` for this request, {} when it was not evaluated yet.

        Raises:
            ReferenceMismatchError: when it was evaluated for another forget request.
        """
        path = evaluation_path(model)
        if not path.is_file():
            logger.warning("No evaluation of the %s model %s yet: evaluate it first to compare with it.", role, model)
            return {}
        evaluation = read_json(path)
        if evaluation.get(REQUEST_KEY, self.forget_request_sha256) != self.forget_request_sha256:
            raise ReferenceMismatchError(
                f"the {role} model {model} was evaluated for a different forget request than {self.model_path}; "
                "evaluate both with the same request."
            )
        return evaluation

    def _cost_and_gap(self, metrics: Mapping[str, float]) -> dict[str, float]:
        record = read_record(self.model_path)
        if record.get("workflow") not in UNLEARNING_WORKFLOWS:
            return {}
        scores = {"unlearn_seconds": float(record["seconds"]), "samples_per_second": record["samples_per_second"]}
        if self.reference_model is None:
            return scores
        reference_record = _read_if_exists(record_path(self.reference_model))
        if reference_record and reference_record.get(REQUEST_KEY) != record.get(REQUEST_KEY):
            raise ReferenceMismatchError(
                f"reference model {self.reference_model} was retrained for a different forget request than "
                f"{self.model_path}; compare models made for the same request."
            )
        reference_metrics = self._reference_evaluation(self.reference_model, "retrained")
        if not reference_record or not reference_metrics:
            return scores
        scores["gap_to_retrain"] = avg_gap(metrics, reference_metrics, self.gap_metrics)
        scores["speedup_vs_retrain"] = float(reference_record["seconds"]) / max(scores["unlearn_seconds"], 1e-9)
        return scores


def distinct_model(model: str | os.PathLike | None, evaluated: Path) -> Path | None:
    """``model`` as a path, or None when absent or the evaluated model itself."""
    if not model or Path(model).resolve() == evaluated.resolve():
        return None
    return Path(model)


def _read_if_exists(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}
