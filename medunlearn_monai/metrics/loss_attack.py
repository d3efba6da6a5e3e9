"""Loss-threshold membership inference: how well per-item loss alone tells members from unseen items."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from medunlearn_monai.metrics.membership_inference import finite_score_sets

# Name suffix -> false-positive rate at which the attack's true-positive rate is reported (Carlini et al. 2022).
FPR_LEVELS: dict[str, float] = {"1pct": 0.01, "0.1pct": 0.001}


def loss_attack(member_losses: np.ndarray, non_member_losses: np.ndarray) -> dict[str, float]:
    """ROC AUC and low-FPR TPR of the attack "lower loss = member".

    Members are the positives. ``auc`` = 0.5 means the members' losses look like the non-members'
    (for forget items against test items: forgotten as far as this attack can tell); 1.0 means
    every member has a lower loss than every non-member. ``tpr_at_<level>_fpr`` is the largest TPR
    whose FPR is at most the level; with fewer than 1 / level non-members that is the TPR at zero
    false positives.

    Args:
        member_losses: per-item losses of the members (e.g. the forget set).
        non_member_losses: per-item losses of items never trained on (e.g. the test set).

    Returns:
        ``{"auc": ..., "tpr_at_1pct_fpr": ..., "tpr_at_0.1pct_fpr": ...}``.

    Raises:
        ValueError: when either set is empty or holds a non-finite loss.
    """
    sets = finite_score_sets("the loss attack", "losses", {"member": member_losses, "non-member": non_member_losses})
    is_member = np.concatenate([np.ones(sets["member"].size), np.zeros(sets["non-member"].size)])
    membership_score = -np.concatenate([sets["member"], sets["non-member"]])
    # Every threshold is kept so that the TPR at each FPR level is read off the exact curve.
    fpr, tpr, _ = roc_curve(is_member, membership_score, drop_intermediate=False)
    scores = {"auc": float(roc_auc_score(is_member, membership_score))}
    scores.update({f"tpr_at_{name}_fpr": float(tpr[fpr <= level].max()) for name, level in FPR_LEVELS.items()})
    return scores
