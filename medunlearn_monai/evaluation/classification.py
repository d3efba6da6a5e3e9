"""Unlearning evaluation of a classifier: membership inference, per-observation and subgroup scores, a probe and
a confidence plot on top of :class:`~medunlearn_monai.evaluation.unlearning.UnlearningEvaluation`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EpochOutputStore
from matplotlib.figure import Figure
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from torch.utils.data import DataLoader

from medunlearn_monai.evaluation.unlearning import UnlearningEvaluation
from medunlearn_monai.metrics.membership_inference import (
    mia_efficacy,
    true_class_confidence,
    true_class_loss,
    true_label_confidence,
    true_label_loss,
)
from medunlearn_monai.metrics.probe import LayerInputs, probe_accuracy
from medunlearn_monai.metrics.subgroups import accuracy, per_observation_auc, subgroup_metrics


class ClassificationEvaluation(UnlearningEvaluation):
    """Unlearning scores of a classifier: split metrics, membership-inference efficacy, subgroups, confidence plot.

    ``mia_efficacy`` is added when retain, forget and test data exist; the evaluator's
    postprocessing must leave probabilities in ``pred`` (softmax, or sigmoid for ``multilabel``).
    Each item's loss is its cross-entropy ``-log p_true`` (multi-label: mean binary cross-entropy
    over its known labels) and its confidence the true-class (mean true-label) probability.
    With ``observation_names`` each split also gets ``<split>_auc_<observation>``; with
    ``subgroup_key`` (an item attribute such as ``sex``) ``<split>_auc_<group>``,
    ``<split>_acc_<group>`` and, for two groups, ``<split>_auc_gap`` (first minus second group by
    name). ``<split>_acc`` (per observation at 0.5 for multi-label) is added when the evaluator has
    no ``acc`` metric.

    With ``probe_loader`` (the validation items), a linear probe (:mod:`medunlearn_monai.metrics.probe`)
    is fitted on what the layer ``probe_layer`` (a name in ``network.named_modules()``; ``fc``, the
    head of MONAI's ResNet, makes it the penultimate features) receives for the retain and
    ``probe_loader`` items, with their labels, and gives ``probe_forget_acc`` and ``probe_test_acc``.
    A model that only moved its head away from the forget data keeps a high ``probe_forget_acc``;
    the retrained model's is the target. Other arguments as for :class:`UnlearningEvaluation`.
    """

    def __init__(
        self,
        evaluator: SupervisedEvaluator,
        *args: Any,
        multilabel: bool = False,
        observation_names: Sequence[str] | None = None,
        subgroup_key: str | None = None,
        probe_loader: DataLoader | None = None,
        probe_layer: str = "fc",
        **kwargs: Any,
    ):
        super().__init__(evaluator, *args, **kwargs)
        self.multilabel = multilabel
        self.observation_names = list(observation_names or [])
        self.subgroup_key = subgroup_key
        self.outputs = EpochOutputStore(output_transform=from_engine(["pred", "label"]))
        self.outputs.attach(evaluator)
        self.confidences: dict[str, np.ndarray] = {}
        self._groups: list[str] = []
        if subgroup_key:
            evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._keep_groups)
        # The validation items only fit the probe, so they are not one of ``loaders``: that would add
        # val_* metrics, item-score rows and a confidence curve nobody asked for. Their features take
        # one forward pass; the other splits' features are kept during their evaluation.
        self.probe_loader = probe_loader
        self.layer_inputs = LayerInputs(evaluator.network, probe_layer) if probe_loader is not None else None
        self.features: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _evaluate_split(self, split: str, loader: DataLoader) -> dict[str, float]:
        self._groups = []
        split_metrics = self._run_and_keep_features(split, loader)
        probabilities, truth = self._epoch_outputs()
        confidence = true_label_confidence if self.multilabel else true_class_confidence
        loss = true_label_loss if self.multilabel else true_class_loss
        self.confidences[split] = confidence(probabilities, truth)
        self._keep_item_scores(split, loss(probabilities, truth), self.confidences[split])
        split_metrics.setdefault("acc", accuracy(probabilities, truth, self.multilabel))
        if self.observation_names:
            split_metrics.update(per_observation_auc(probabilities, truth, self.observation_names))
        if self.subgroup_key:
            split_metrics.update(subgroup_metrics(probabilities, truth, self._groups, self.multilabel))
        return split_metrics

    def _run_and_keep_features(self, split: str, loader: DataLoader) -> dict[str, float]:
        """Run the evaluator on ``loader`` and, when probing, keep the split's features and labels."""
        if self.layer_inputs is None:
            return super()._evaluate_split(split, loader)
        self.layer_inputs.clear()
        split_metrics = super()._evaluate_split(split, loader)
        features, truth = self.layer_inputs.take(), self._epoch_outputs()[1]
        if len(features) != len(truth):
            raise ValueError(
                f"the probed layer saw {len(features)} inputs for the {len(truth)} items of the {split} split: "
                "probing needs one forward pass per item."
            )
        self.features[split] = (features, truth.float().numpy() if self.multilabel else truth.reshape(-1).numpy())
        return split_metrics

    def _epoch_outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and labels of the evaluator's last run, one row per item."""
        predictions, labels = [], []
        for batch_predictions, batch_labels in self.outputs.data:
            predictions.extend(batch_predictions)
            labels.extend(batch_labels)
        probabilities = torch.stack([torch.as_tensor(x) for x in predictions]).float().cpu()
        return probabilities, torch.stack([torch.as_tensor(x) for x in labels]).cpu()

    def _probe_scores(self) -> dict[str, float]:
        """``probe_<split>_acc`` for the forget and test splits, fitted on retain and validation features."""
        if self.layer_inputs is None or "retain" not in self.features:
            return {}
        if len(self.probe_loader.dataset):
            self._run_and_keep_features("val", self.probe_loader)
        features, self.features = self.features, {}
        fit = [features[split] for split in ("retain", "val") if split in features]
        fit_features, fit_labels = np.concatenate([x for x, _ in fit]), np.concatenate([y for _, y in fit])
        scored = {split: features[split] for split in ("forget", "test") if split in features}
        accuracies = probe_accuracy((fit_features, fit_labels), scored, self.multilabel, self.seed)
        return {f"probe_{split}_acc": value for split, value in accuracies.items()}

    def _keep_groups(self, engine: Engine) -> None:
        self._groups.extend(str(item[self.subgroup_key]) for item in engine.state.batch)

    def _model_scores(self, metrics: Mapping[str, float]) -> dict[str, float]:
        scores: dict[str, float] = {}
        confidences = self._known_item_scores("confidence")
        if confidences:
            scores["mia_efficacy"] = mia_efficacy(
                confidences["retain"], confidences["test"], confidences["forget"], self.seed
            )
        return scores | self._probe_scores()

    def _log_artifacts(self) -> None:
        figure = Figure(figsize=(6, 4))
        axis = figure.subplots()
        for split, values in self.confidences.items():
            axis.hist(values, bins=40, range=(0, 1), density=True, histtype="step", linewidth=1.5, label=split)
        axis.set(xlabel="true-class confidence", ylabel="density", title=f"Confidence by split: {self.model_path.name}")
        axis.legend()
        self.tracker.log_figure(figure, "plots/confidence_by_split.png")
