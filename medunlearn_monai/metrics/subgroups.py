"""Quality per observation and per subgroup (e.g. sex) from a split's stored predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_roc_auc


def accuracy(probabilities: torch.Tensor, labels: torch.Tensor, multilabel: bool) -> float:
    """Fraction of correct decisions: per known observation at 0.5 (multi-label; NaN labels are unknown) or of
    the argmax class."""
    if multilabel:
        known = ~torch.isnan(labels.float())
        return float(((probabilities > 0.5).float() == labels.float())[known].float().mean())
    return float((probabilities.argmax(dim=1) == labels.reshape(-1).long()).float().mean())


def mean_auc(probabilities: torch.Tensor, labels: torch.Tensor, multilabel: bool) -> float:
    """Macro ROC AUC over observations (multi-label) or one-vs-rest over classes; NaN when undefined.

    Observations or classes with only one label value among the items have no AUC and are left out.
    """
    if not multilabel:
        labels = torch.nn.functional.one_hot(labels.reshape(-1).long(), probabilities.shape[1])
    values = [_auc(probabilities[:, column], labels[:, column]) for column in range(probabilities.shape[1])]
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")


def per_observation_auc(probabilities: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """ROC AUC of each observation, keyed ``auc_<name>`` (lower case, spaces as underscores)."""
    return {f"auc_{metric_suffix(name)}": _auc(probabilities[:, column], labels[:, column]) for column, name in
            enumerate(names)}  # fmt: skip


def subgroup_metrics(
    probabilities: torch.Tensor, labels: torch.Tensor, groups: Sequence[str], multilabel: bool
) -> dict[str, float]:
    """``auc_<group>`` and ``acc_<group>`` for every group value, plus ``auc_gap`` = first - second of two groups.

    Groups are sorted by name (e.g. ``female`` before ``male``), so ``auc_gap`` > 0 favours the first.
    """
    values = np.asarray(groups)
    metrics: dict[str, float] = {}
    names = sorted(set(values.tolist()))
    for name in names:
        chosen = torch.as_tensor(values == name)
        suffix = metric_suffix(name)
        metrics[f"auc_{suffix}"] = mean_auc(probabilities[chosen], labels[chosen], multilabel)
        metrics[f"acc_{suffix}"] = accuracy(probabilities[chosen], labels[chosen], multilabel)
    if len(names) == 2:
        metrics["auc_gap"] = metrics[f"auc_{metric_suffix(names[0])}"] - metrics[f"auc_{metric_suffix(names[1])}"]
    return metrics


def metric_suffix(name: str) -> str:
    """A metric-name-safe form of an observation or group name: ``Pleural Effusion`` -> ``pleural_effusion``."""
    return "_".join(str(name).lower().replace("/", " ").split())


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    known = ~torch.isnan(labels.float())  # unknown (ignored) labels are left out
    scores, labels = scores[known], labels[known]
    if torch.unique(labels).numel() < 2:
        return float("nan")
    return float(compute_roc_auc(scores.reshape(-1, 1), labels.reshape(-1, 1)))


def mean_auc_of_outputs(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """:func:`mean_auc` for multi-label outputs, with the signature of ignite's ``EpochMetric``."""
    return mean_auc(predictions, labels, multilabel=True)
