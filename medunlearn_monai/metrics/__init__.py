"""Unlearning metrics: membership inference, gap to the retrained model, probes, subgroup and segmentation scores.

Every score here is pure: arrays and tensors in, numbers out. Running the evaluator, writing the results beside the
model and logging them is :mod:`medunlearn_monai.evaluation`'s.
"""

from medunlearn_monai.metrics.gap import GAP_METRICS, avg_gap
from medunlearn_monai.metrics.loss_attack import loss_attack
from medunlearn_monai.metrics.membership_inference import mia_efficacy, true_class_confidence
from medunlearn_monai.metrics.ulira import logit_scale, ulira_auc, ulira_scores

__all__ = [
    "GAP_METRICS",
    "avg_gap",
    "logit_scale",
    "loss_attack",
    "mia_efficacy",
    "true_class_confidence",
    "ulira_auc",
    "ulira_scores",
]
