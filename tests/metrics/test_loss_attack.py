"""Loss-threshold membership inference on losses whose answer is known."""

import numpy as np
import pytest

from medunlearn_monai.metrics.loss_attack import loss_attack

rng = np.random.default_rng(0)


def test_memorised_members_are_found_even_at_low_false_positive_rates():
    members = rng.uniform(0.0, 0.05, 500)  # trained on: near-zero loss
    non_members = rng.gamma(2.0, 0.5, 2000) + 0.1  # unseen: clearly higher loss
    scores = loss_attack(members, non_members)
    assert scores["auc"] > 0.99
    assert scores["tpr_at_1pct_fpr"] > 0.9 and scores["tpr_at_0.1pct_fpr"] > 0.9


def test_identically_distributed_losses_give_a_chance_level_attack():
    scores = loss_attack(rng.gamma(2.0, 0.5, 5000), rng.gamma(2.0, 0.5, 5000))
    assert scores["auc"] == pytest.approx(0.5, abs=0.03)
    assert scores["tpr_at_1pct_fpr"] == pytest.approx(0.01, abs=0.01)


def test_tpr_is_read_at_the_largest_threshold_within_each_false_positive_rate():
    non_members = np.arange(1.0, 101.0)  # 100 items: 1% FPR allows one false positive, 0.1% none
    members = np.array([0.5, 1.5, 50.5, 200.0])
    scores = loss_attack(members, non_members)
    assert scores["tpr_at_0.1pct_fpr"] == pytest.approx(0.25)  # only 0.5 is below every non-member
    assert scores["tpr_at_1pct_fpr"] == pytest.approx(0.5)  # 1.5 is caught once the loss-1.0 item is let in
    assert scores["auc"] == pytest.approx((100 + 99 + 50 + 0) / 400)


def test_members_with_higher_loss_score_below_chance():
    assert loss_attack([5.0, 6.0], [0.1, 0.2])["auc"] == pytest.approx(0.0)


def test_empty_or_non_finite_losses_are_refused():
    with pytest.raises(ValueError, match="member losses are empty"):
        loss_attack([], [0.1])
    with pytest.raises(ValueError, match="non-member losses are empty"):
        loss_attack([0.1], np.array([]))
    with pytest.raises(ValueError, match="1 non-finite"):
        loss_attack([0.1, np.nan], [0.2])
