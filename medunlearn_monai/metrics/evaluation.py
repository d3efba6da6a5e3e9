"""Evaluate one model on retain / forget / test data and score it as an unlearning result."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.handlers import EpochOutputStore
from matplotlib.figure import Figure
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from torch.utils.data import DataLoader

from medunlearn_monai.metrics.gap import avg_gap
from medunlearn_monai.metrics.membership_inference import mia_efficacy, true_class_confidence
from medunlearn_monai.model_io import evaluation_path, read_json, read_record, record_path, write_json
from medunlearn_monai.tracking import MLflowTracker

logger = logging.getLogger(__name__)
UNLEARNING_WORKFLOWS = ("retrain", "unlearn")


class ReferenceMismatchError(ValueError):
    """The retrained reference answers a different forget request than the evaluated model."""


class UnlearningEvaluation:
    """Run ``evaluator`` on each split and compute the unlearning scores of the model it holds.

    Metrics come out as ``<split>_<name>`` for every metric of the evaluator, plus ``mia_efficacy``
    (when retain, forget and test data exist), ``unlearn_seconds`` (for retrained and unlearned
    models), and ``gap_to_retrain`` and ``speedup_vs_retrain`` when the retrained reference has been
    evaluated. The result is written beside the model (``<model>.eval.json``) and, with a tracker,
    logged to MLflow together with a plot of the confidence distributions.

    Args:
        evaluator: a MONAI evaluator whose postprocessing leaves class probabilities in ``pred``.
        loaders: split name -> data loader; empty splits are skipped.
        model_path: the evaluated model file; its record (``<model>.json``) tells how it was made.
        reference_model: the retrained model file to compare with, or None.
        tracker: the MLflow run of this evaluation, or None.
        seed: seed of the membership-inference attack's member sample.
    """

    def __init__(
        self,
        evaluator: SupervisedEvaluator,
        loaders: Mapping[str, DataLoader],
        model_path: str | os.PathLike,
        reference_model: str | os.PathLike | None = None,
        tracker: MLflowTracker | None = None,
        seed: int = 0,
    ):
        self.evaluator = evaluator
        self.loaders = dict(loaders)
        self.model_path = Path(model_path)
        is_itself = reference_model is not None and Path(reference_model).resolve() == self.model_path.resolve()
        self.reference_model = None if not reference_model or is_itself else Path(reference_model)
        self.tracker = tracker
        self.seed = seed
        self.outputs = EpochOutputStore(output_transform=from_engine(["pred", "label"]))
        self.outputs.attach(evaluator)

    def run(self) -> dict[str, float]:
        """Evaluate every split, score, save and log; returns the metrics."""
        metrics: dict[str, float] = {}
        confidences: dict[str, np.ndarray] = {}
        for split, loader in self.loaders.items():
            if len(loader.dataset) == 0:
                continue
            split_metrics, confidences[split] = self._evaluate_split(loader)
            metrics.update({f"{split}_{name}": value for name, value in split_metrics.items()})
        if all(split in confidences for split in ("retain", "test", "forget")):
            metrics["mia_efficacy"] = mia_efficacy(
                confidences["retain"], confidences["test"], confidences["forget"], seed=self.seed
            )
        metrics.update(self._cost_and_gap(metrics))
        write_json(evaluation_path(self.model_path), metrics)
        if self.tracker:
            self.tracker.log_metrics(metrics)
            self._log_confidence_plot(confidences)
        return metrics

    def _evaluate_split(self, loader: DataLoader) -> tuple[dict[str, float], np.ndarray]:
        # One evaluator serves all splits; ignite keeps the previous epoch length unless it is reset.
        self.evaluator.data_loader = loader
        self.evaluator.state.epoch_length = len(loader)
        self.evaluator.run()
        predictions, labels = [], []
        for batch_predictions, batch_labels in self.outputs.data:
            predictions.extend(batch_predictions)
            labels.extend(batch_labels)
        confidence = true_class_confidence(torch.stack(predictions), torch.stack([torch.as_tensor(x) for x in labels]))
        split_metrics = {name: float(value) for name, value in self.evaluator.state.metrics.items()}
        return split_metrics, confidence

    def _cost_and_gap(self, metrics: Mapping[str, float]) -> dict[str, float]:
        record = read_record(self.model_path)
        if record.get("workflow") not in UNLEARNING_WORKFLOWS:
            return {}
        scores = {"unlearn_seconds": float(record["seconds"]), "samples_per_second": record["samples_per_second"]}
        if self.reference_model is None:
            return scores
        reference_record = _read_if_exists(record_path(self.reference_model))
        reference_metrics = _read_if_exists(evaluation_path(self.reference_model))
        if not reference_record or not reference_metrics:
            logger.warning(
                "No evaluated retrained model at %s: evaluate it first to get gap_to_retrain and speedup_vs_retrain.",
                self.reference_model,
            )
            return scores
        if reference_record.get("forget_request_sha256") != record.get("forget_request_sha256"):
            raise ReferenceMismatchError(
                f"reference model {self.reference_model} was retrained for a different forget request than "
                f"{self.model_path}; compare models made for the same request."
            )
        scores["gap_to_retrain"] = avg_gap(metrics, reference_metrics)
        scores["speedup_vs_retrain"] = float(reference_record["seconds"]) / max(scores["unlearn_seconds"], 1e-9)
        return scores

    def _log_confidence_plot(self, confidences: Mapping[str, np.ndarray]) -> None:
        figure = Figure(figsize=(6, 4))
        axis = figure.subplots()
        for split, values in confidences.items():
            axis.hist(values, bins=40, range=(0, 1), density=True, histtype="step", linewidth=1.5, label=split)
        axis.set(xlabel="true-class confidence", ylabel="density", title=f"Confidence by split: {self.model_path.name}")
        axis.legend()
        self.tracker.log_figure(figure, "plots/confidence_by_split.png")


def _read_if_exists(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}
