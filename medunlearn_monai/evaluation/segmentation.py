"""Unlearning evaluation of a segmenter: per-subject Dice and MAE, change relative to the original model, overlays,
on top of :class:`~medunlearn_monai.evaluation.unlearning.UnlearningEvaluation`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from matplotlib.figure import Figure
from monai.engines import SupervisedEvaluator
from torch.utils.data import DataLoader

from medunlearn_monai.evaluation.unlearning import UnlearningEvaluation, distinct_model
from medunlearn_monai.forget import hash_subject
from medunlearn_monai.metrics.dice import dice_relative_to_original, forget_dice_gap
from medunlearn_monai.metrics.segmentation import (
    PER_SUBJECT_METRICS,
    SEGMENTATION_GAP_METRICS,
    mean_voxel_cross_entropy,
)
from medunlearn_monai.records import evaluation_path, subject_scores_path, write_json


class SegmentationEvaluation(UnlearningEvaluation):
    """Dice and MAE per subject and split, and the paper's headline numbers versus the original model.

    The evaluator needs the metrics ``dice`` (MONAI ``MeanDice``, background excluded), ``mae`` (the soft MAE: MONAI
    ``MeanAbsoluteError`` on :func:`~medunlearn_monai.metrics.segmentation.foreground_probability_and_mask`) and
    ``hard_mae`` (the fraction of misclassified voxels: ``MeanAbsoluteError`` on
    :func:`~medunlearn_monai.metrics.segmentation.misclassified_voxels`), all with ``save_details=True``, and loaders
    with batch size 1 and no shuffling, so that each ``metric_details`` row is one subject. Added metrics
    (:func:`~medunlearn_monai.metrics.dice.dice_relative_to_original`): ``forget_dice_decrease_pct`` =
    100 (D_orig - D) / D_orig on forget subjects, ``retain_dice_kept_pct`` = 100 D / D_orig on
    retain subjects (and ``test_dice_kept_pct``) when the original model was evaluated for the same
    request; ``gap_to_retrain`` is the mean absolute Dice difference to the retrained model, in
    points, and ``forget_dice_gap_to_retrain`` = 100 |D_forget - D_forget(retrained)| its forget part. Per-subject
    rows carry the salted SHA-256 of the subject ID, never the ID, and go to
    ``<model>.subjects.json`` and the run's artifacts; a PNG shows one axial slice per split
    (forget subjects as label and prediction outlines only, without their image). Each subject's
    per-item loss is :func:`~medunlearn_monai.metrics.segmentation.mean_voxel_cross_entropy` and its confidence
    ``exp(-loss)`` (``<model>.items.json``, see :class:`UnlearningEvaluation`); only these numbers are kept, not
    volumes.

    Args:
        evaluator: see above.
        loaders: split name -> data loader of whole subjects.
        model_path: the evaluated model file.
        original_model: the model before unlearning, for the relative numbers, or None.
        *args, **kwargs: further arguments of :class:`UnlearningEvaluation` (``salt`` among them).
    """

    gap_metrics = SEGMENTATION_GAP_METRICS

    def __init__(
        self,
        evaluator: SupervisedEvaluator,
        loaders: Mapping[str, DataLoader],
        model_path: str | os.PathLike,
        *args: Any,
        original_model: str | os.PathLike | None = None,
        **kwargs: Any,
    ):
        super().__init__(evaluator, loaders, model_path, *args, **kwargs)
        for split, loader in self.loaders.items():
            if loader.batch_size != 1:
                raise ValueError(
                    f"the {split} loader must hold one subject per batch, got batch_size {loader.batch_size}."
                )
        self.original_model = distinct_model(original_model, self.model_path)
        self.subject_rows: list[dict[str, Any]] = []
        self.slices: dict[str, dict[str, np.ndarray]] = {}
        self._split = ""
        self._losses: list[float] = []
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._keep_losses)
        evaluator.add_event_handler(Events.ITERATION_COMPLETED(once=1), self._keep_first_slice)

    def _evaluate_split(self, split: str, loader: DataLoader) -> dict[str, float]:
        self._split, self._losses = split, []
        split_metrics = super()._evaluate_split(split, loader)
        self._keep_item_scores(split, self._losses, np.exp(-np.asarray(self._losses)))
        details = self.evaluator.state.metric_details
        missing = [name for name in PER_SUBJECT_METRICS if name not in details]
        if missing:
            raise KeyError(f"the evaluator keeps no per-subject {', '.join(missing)}: use save_details=True.")
        per_subject = {name: _per_item(details[name]) for name in PER_SUBJECT_METRICS}
        for position, subject_id in enumerate(self._subjects):
            row = {"split": split, "subject_sha256": hash_subject(subject_id, self.salt)}
            self.subject_rows.append(row | {name: float(values[position]) for name, values in per_subject.items()})
        return split_metrics

    def _keep_losses(self, engine: Engine) -> None:
        self._losses.extend(mean_voxel_cross_entropy(item) for item in engine.state.output)

    def _keep_first_slice(self, engine: Engine) -> None:
        first = engine.state.output[0]
        label = first["label"].argmax(0).cpu().numpy()
        depth = int(np.argmax((label > 0).sum(axis=(0, 1))))  # the axial slice with most foreground
        self.slices[self._split] = {
            "image": first["image"][0, :, :, depth].cpu().numpy(),
            "label": label[:, :, depth],
            "pred": first["pred"].argmax(0).cpu().numpy()[:, :, depth],
        }

    def _model_scores(self, metrics: Mapping[str, float]) -> dict[str, float]:
        original = self._reference_evaluation(self.original_model, "original") if self.original_model else {}
        evaluated = self.reference_model is not None and evaluation_path(self.reference_model).is_file()
        retrained = self._reference_evaluation(self.reference_model, "retrained") if evaluated else {}
        return dice_relative_to_original(metrics, original) | forget_dice_gap(metrics, retrained)

    def run(self) -> dict[str, float]:
        self.subject_rows = []
        metrics = super().run()
        subjects_path = subject_scores_path(self.model_path)
        write_json(subjects_path, {"subjects": self.subject_rows})
        if self.tracker:
            self.tracker.log_artifact(subjects_path, "tables")
        return metrics

    def _log_artifacts(self) -> None:
        figure = Figure(figsize=(4 * len(self.slices), 4.2))
        axes = figure.subplots(1, len(self.slices), squeeze=False)[0]
        for axis, (split, planes) in zip(axes, self.slices.items(), strict=True):
            if split != "forget":
                axis.imshow(planes["image"].T, cmap="gray", origin="lower")
            for key, colour in (("label", "lime"), ("pred", "red")):
                if (planes[key] > 0).any():
                    axis.contour(planes[key].T > 0, levels=[0.5], colors=colour, linewidths=1.0)
            axis.set_title(f"{split}: truth (green), prediction (red)", fontsize=9)
            axis.set_axis_off()
        figure.suptitle(self.model_path.name)
        self.tracker.log_figure(figure, "plots/overlay_by_split.png")


def _per_item(details: torch.Tensor) -> np.ndarray:
    """One value per item from a ``(items, channels)`` metric buffer, averaging classes and skipping NaN."""
    values = torch.as_tensor(details, dtype=torch.float64).reshape(details.shape[0], -1)
    return torch.nanmean(values, dim=1).cpu().numpy()
