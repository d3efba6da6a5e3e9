"""U-LiRA: can an attacker tell a model that *unlearned* an example from one *retrained* without it?

Hayes et al. 2024, "Inexact unlearning needs more careful evaluations to avoid a false sense of
privacy". For each forget example, shadow models give its confidence under K models that saw it
and then unlearned it and under K models retrained without it. A Gaussian is fitted to the
logit-scaled confidence of each example in each case, and a target model's confidence on the
example is scored by the log-likelihood ratio of the two fits (LiRA, Carlini et al. 2022, applied
to unlearning). The AUC of telling the forget examples of unlearned target models from those of
retrained target models is the result: 0.5 means the unlearning method is indistinguishable from
exact retraining, 1.0 that every unlearned example gives itself away.

Cost is K shadow pairs (2K trainings plus K unlearning runs) per study: K = 2..4 is runnable on a
CPU with the small bundles and gives a coarse estimate (per-example variances are then too noisy,
hence the pooled variance by default); K >= 16, as in the paper's regime, is intended for a GPU.
The shadow-training loop lives elsewhere; this module is only the statistics (numpy / scipy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu, norm

from medunlearn_monai.metrics.membership_inference import finite_score_sets

# Confidences come from float32 probabilities, whose spacing just below 1 is ~6e-8: clipping at 1e-7 keeps the
# logit finite without inventing resolution the probabilities never had.
CONFIDENCE_CLIP = 1e-7
# Smallest variance of a fit, in squared logits, so that identical shadow confidences do not give infinite ratios.
VARIANCE_FLOOR = 1e-6


@dataclass(frozen=True)
class GaussianFit:
    """Per-example Gaussian of logit-scaled confidence: ``mean`` and ``std`` both shaped ``(n,)``."""

    mean: np.ndarray
    std: np.ndarray

    def log_likelihood(self, logit_confidence: np.ndarray) -> np.ndarray:
        """Log density of each example's logit-scaled confidence (``(n,)`` or ``(targets, n)``)."""
        return norm.logpdf(logit_confidence, loc=self.mean, scale=self.std)


def logit_scale(confidence: np.ndarray, clip: float = CONFIDENCE_CLIP) -> np.ndarray:
    """``log(p / (1 - p))`` of confidences clipped to ``[clip, 1 - clip]``, LiRA's near-Gaussian scale.

    Raises:
        ValueError: when a confidence is NaN or outside [0, 1].
    """
    confidence = np.asarray(confidence, dtype=float)
    if np.isnan(confidence).any() or (confidence < 0).any() or (confidence > 1).any():
        raise ValueError("confidences must be probabilities in [0, 1] without NaN.")
    confidence = np.clip(confidence, clip, 1.0 - clip)
    return np.log(confidence) - np.log1p(-confidence)


def fit_gaussians(shadow_confidence: np.ndarray, fixed_variance: bool = True) -> GaussianFit:
    """Fit one Gaussian per example to its logit-scaled confidence under K shadow models.

    Args:
        shadow_confidence: confidences shaped ``(K, n)``: K shadow models, n forget examples.
        fixed_variance: use one pooled variance for all examples (the mean of the per-example
            unbiased variances), as LiRA recommends when K is small; otherwise each example's own.

    Raises:
        ValueError: when the array is not 2-D or K < 2 (no variance can be estimated from one model).
    """
    values = logit_scale(shadow_confidence)
    if values.ndim != 2:
        raise ValueError(f"shadow confidences must be shaped (K models, n examples), got {values.shape}.")
    if values.shape[0] < 2:
        raise ValueError(f"a Gaussian fit needs at least 2 shadow models, got K = {values.shape[0]}.")
    variance = values.var(axis=0, ddof=1)
    if fixed_variance:
        # Pooled within-example variance; LiRA's reference code instead takes the variance of all shadow values,
        # which also counts how far examples' means lie apart and so blunts the test.
        variance = np.full_like(variance, variance.mean())
    return GaussianFit(mean=values.mean(axis=0), std=np.sqrt(np.maximum(variance, VARIANCE_FLOOR)))


def ulira_scores(
    target_confidence: np.ndarray,
    unlearned_shadows: np.ndarray,
    retrained_shadows: np.ndarray,
    fixed_variance: bool = True,
) -> np.ndarray:
    """Per-example log-likelihood ratio "unlearned" versus "retrained" of a target model's forget examples.

    Args:
        target_confidence: the target model's confidence on the n forget examples, ``(n,)``, or
            several target models' at once, ``(targets, n)``.
        unlearned_shadows: confidences of K shadow models that saw the examples and unlearned them, ``(K, n)``.
        retrained_shadows: confidences of K' shadow models retrained without the examples, ``(K', n)``.
        fixed_variance: see :func:`fit_gaussians`.

    Returns:
        Scores shaped like ``target_confidence``; higher = more like an unlearned (not retrained) model.

    Raises:
        ValueError: when the shapes do not fit together (see also :func:`fit_gaussians`).
    """
    target = logit_scale(target_confidence)
    unlearned, retrained = np.asarray(unlearned_shadows), np.asarray(retrained_shadows)
    if target.ndim not in (1, 2):
        raise ValueError(f"target confidences must be shaped (n,) or (targets, n), got {target.shape}.")
    for name, shadows in (("unlearned", unlearned), ("retrained", retrained)):
        if shadows.ndim != 2 or shadows.shape[1] != target.shape[-1]:
            raise ValueError(
                f"{name} shadow confidences must be shaped (K, {target.shape[-1]}) to match the target's "
                f"{target.shape[-1]} examples, got {shadows.shape}."
            )
    unlearned_fit = fit_gaussians(unlearned, fixed_variance)
    retrained_fit = fit_gaussians(retrained, fixed_variance)
    return unlearned_fit.log_likelihood(target) - retrained_fit.log_likelihood(target)


def ulira_auc(scores_of_unlearned_targets: np.ndarray, scores_of_retrained_targets: np.ndarray) -> float:
    """ROC AUC of telling unlearned models' forget examples (positives) from retrained models' by U-LiRA score.

    0.5 = indistinguishable from retraining (ideal), 1.0 = every unlearned example detected. Arrays
    of any shape are flattened. The AUC is the Mann-Whitney U statistic over all positive/negative
    pairs (ties count one half), which equals the area under the ROC curve.

    Raises:
        ValueError: when either set is empty or holds a non-finite score.
    """
    sets = finite_score_sets(
        "U-LiRA AUC", "scores", {"unlearned": scores_of_unlearned_targets, "retrained": scores_of_retrained_targets}
    )
    positives, negatives = sets["unlearned"], sets["retrained"]
    statistic = mannwhitneyu(positives, negatives, alternative="greater").statistic
    return float(statistic / (positives.size * negatives.size))
