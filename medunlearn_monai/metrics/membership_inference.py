"""Membership inference efficacy, the field's standard score for how well data was forgotten."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.svm import SVC
from torch.nn import functional

# Smallest probability a per-item loss is computed from: -log(1e-12) ~ 27.6 nats at most.
PROBABILITY_FLOOR = 1e-12


def true_class_confidence(probabilities: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Softmax probability each item gives its true class: ``probabilities[i, labels[i]]``."""
    labels = torch.as_tensor(labels).reshape(-1).long()
    return probabilities.reshape(labels.shape[0], -1).gather(1, labels[:, None]).squeeze(1).double().cpu().numpy()


def true_label_confidence(probabilities: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Multi-label analogue of :func:`true_class_confidence`: the mean probability each item gives its true labels.

    For each observation the probability of the true value is ``p`` for a positive and ``1 - p`` for a
    negative label; the mean over known observations (labels not NaN) is the item's confidence.
    """
    labels = torch.as_tensor(labels, dtype=probabilities.dtype).reshape(probabilities.shape)
    return (labels * probabilities + (1 - labels) * (1 - probabilities)).nanmean(dim=1).double().cpu().numpy()


def true_class_loss(probabilities: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Cross-entropy of each item from its softmax probabilities: ``-log p[i, labels[i]]``.

    Probabilities are clipped to ``[PROBABILITY_FLOOR, 1]`` so that a class given zero probability
    costs a large, finite loss.
    """
    labels = torch.as_tensor(labels).reshape(-1).long()
    probabilities = probabilities.reshape(labels.shape[0], -1).double()
    true_class = probabilities.gather(1, labels[:, None]).squeeze(1)
    # Confident items have p_true == 1.0 in float32, so -log p_true ties them all at 0; 1 - p_true is read from the
    # other classes' probabilities instead, which keep their precision (1e-12 stays 1e-12), and -log1p(-(1 - p_true))
    # keeps the members a loss attack looks for apart from confident non-members.
    others = probabilities.scatter(1, labels[:, None], 0.0).sum(dim=1)
    losses = torch.where(
        true_class < 0.5, -true_class.clamp_min(PROBABILITY_FLOOR).log(), -torch.log1p(-others.clamp(0.0, 0.5))
    )
    return (losses + 0.0).cpu().numpy()  # + 0.0 turns -0.0 into 0.0


def true_label_loss(probabilities: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Multi-label analogue of :func:`true_class_loss`: mean binary cross-entropy over each item's known labels.

    Labels that are NaN are unknown and left out, as in training
    (:class:`medunlearn_monai.losses.MaskedBCEWithLogitsLoss`); an item without any known label gets NaN.
    """
    probabilities = probabilities.double().clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
    labels = torch.as_tensor(labels, dtype=probabilities.dtype).reshape(probabilities.shape)
    losses = functional.binary_cross_entropy(probabilities, torch.nan_to_num(labels), reduction="none")
    return losses.masked_fill(torch.isnan(labels), float("nan")).nanmean(dim=1).cpu().numpy()


def finite_score_sets(purpose: str, kind: str, sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each named set of per-item values as a flat float array, for an attack that needs all of them.

    Raises:
        ValueError: naming ``purpose`` when a set is empty, or the set that holds a non-finite value.
    """
    arrays = {name: np.asarray(values, dtype=float).ravel() for name, values in sets.items()}
    for name, values in arrays.items():
        if values.size == 0:
            raise ValueError(f"{purpose} needs {' and '.join(arrays)} {kind}; the {name} {kind} are empty.")
        if not np.isfinite(values).all():
            raise ValueError(f"the {name} {kind} hold {int((~np.isfinite(values)).sum())} non-finite values.")
    return arrays


def mia_efficacy(
    retain_confidence: np.ndarray,
    test_confidence: np.ndarray,
    forget_confidence: np.ndarray,
    seed: int = 0,
) -> float:
    """Fraction of forget items that a confidence attack calls non-members (higher = better forgotten).

    An RBF SVC (C=3, gamma="auto", as in SalUn's evaluation) is fitted on true-class confidence with
    members = a random retain sample as large as the test set and non-members = the test set, then
    applied to the forget items.

    Raises:
        ValueError: when any of the three sets is empty or holds a non-finite confidence (a multi-label item
            without any known label has NaN confidence: leave such items out).
    """
    sets = {"retain": retain_confidence, "test": test_confidence, "forget": forget_confidence}
    empty = [name for name, values in sets.items() if len(values) == 0]
    if empty:
        raise ValueError(f"MIA efficacy needs retain, test and forget items; empty: {', '.join(empty)}.")
    non_finite = [name for name, values in sets.items() if not np.isfinite(np.asarray(values, dtype=float)).all()]
    if non_finite:
        raise ValueError(
            f"MIA efficacy needs finite confidences; the {' and '.join(non_finite)} confidences hold NaN or infinity "
            "(items without any known label have none: leave them out)."
        )
    rng = np.random.default_rng(seed)
    members = rng.choice(retain_confidence, size=min(len(retain_confidence), len(test_confidence)), replace=False)
    features = np.concatenate([members, test_confidence]).reshape(-1, 1)
    is_member = np.concatenate([np.ones(len(members)), np.zeros(len(test_confidence))])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(features, is_member)
    return float(np.mean(attack.predict(np.asarray(forget_confidence).reshape(-1, 1)) == 0))
