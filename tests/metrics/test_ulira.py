"""U-LiRA statistics on synthetic shadow confidences whose answer is known."""

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from medunlearn_monai.metrics.ulira import fit_gaussians, logit_scale, ulira_auc, ulira_scores

EXAMPLES = 200


def confidences(rng: np.random.Generator, base_logits: np.ndarray, shift: float, models: int) -> np.ndarray:
    """(models, n) confidences whose logits are ``base + shift`` plus per-model noise."""
    return expit(base_logits + shift + rng.normal(0.0, 0.5, (models, base_logits.size)))


def study_auc(unlearned_shift: float, fixed_variance: bool = True, shadows: int = 4, targets: int = 4) -> float:
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 2.0, EXAMPLES)  # examples differ in difficulty, which the per-example fit absorbs
    unlearned_shadows = confidences(rng, base, unlearned_shift, shadows)
    retrained_shadows = confidences(rng, base, 0.0, shadows)
    unlearned_targets = confidences(rng, base, unlearned_shift, targets)
    retrained_targets = confidences(rng, base, 0.0, targets)
    return ulira_auc(
        ulira_scores(unlearned_targets, unlearned_shadows, retrained_shadows, fixed_variance),
        ulira_scores(retrained_targets, unlearned_shadows, retrained_shadows, fixed_variance),
    )


def test_logit_scale_is_the_log_odds_and_stays_finite_at_zero_and_one():
    assert logit_scale(np.array([0.5, expit(1.0)])) == pytest.approx([0.0, 1.0])
    extremes = logit_scale(np.array([0.0, 1.0]))
    assert np.isfinite(extremes).all() and extremes[0] == pytest.approx(-extremes[1])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        logit_scale(np.array([1.5]))


def test_gaussian_fits_use_the_pooled_or_the_per_example_variance():
    shadows = expit(np.array([[0.0, 0.0], [2.0, 4.0]]))  # per-example variances (ddof 1): 2 and 8
    pooled, own = fit_gaussians(shadows), fit_gaussians(shadows, fixed_variance=False)
    assert pooled.mean == pytest.approx([1.0, 2.0]) and own.mean == pytest.approx([1.0, 2.0])
    assert pooled.std == pytest.approx(np.sqrt([5.0, 5.0]))
    assert own.std == pytest.approx(np.sqrt([2.0, 8.0]))


def test_a_method_that_leaves_a_trace_is_told_apart_from_retraining():
    assert study_auc(unlearned_shift=2.0) > 0.95
    assert study_auc(unlearned_shift=2.0, fixed_variance=False, shadows=8) > 0.95


def test_a_method_indistinguishable_from_retraining_scores_chance():
    assert study_auc(unlearned_shift=0.0) == pytest.approx(0.5, abs=0.05)


def test_scores_are_the_gaussian_log_likelihood_ratio():
    unlearned, retrained = expit(np.array([[-1.1], [-0.9]])), expit(np.array([[0.9], [1.1]]))  # means -1, 1; var 0.02
    scores = ulira_scores(expit(np.array([[-1.0], [1.0], [0.0]])), unlearned, retrained)
    # At one mean the other Gaussian is 2 logits away: log-ratio = +-2 ** 2 / (2 * 0.02); halfway it is 0.
    assert scores[:, 0] == pytest.approx([100.0, -100.0, 0.0], abs=1e-6)


def test_auc_equals_the_roc_auc_including_ties():
    rng = np.random.default_rng(1)
    positives, negatives = rng.integers(0, 5, 60).astype(float), rng.integers(0, 5, 40).astype(float)
    expected = roc_auc_score(np.r_[np.ones(60), np.zeros(40)], np.r_[positives, negatives])
    assert ulira_auc(positives, negatives) == pytest.approx(expected)
    assert ulira_auc([1.0, 2.0], [0.0]) == 1.0 and ulira_auc([0.0], [0.0]) == 0.5 and ulira_auc([0.0], [1.0]) == 0.0


def test_shapes_and_inputs_are_checked():
    target, shadows = np.full(3, 0.5), np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match=r"unlearned shadow confidences must be shaped \(K, 3\).*\(2, 4\)"):
        ulira_scores(target, np.full((2, 4), 0.5), shadows)
    with pytest.raises(ValueError, match="at least 2 shadow models, got K = 1"):
        ulira_scores(target, np.full((1, 3), 0.5), shadows)
    with pytest.raises(ValueError, match="retrained scores are empty"):
        ulira_auc([0.1], [])
    with pytest.raises(ValueError, match="non-finite"):
        ulira_auc([np.inf], [0.0])
