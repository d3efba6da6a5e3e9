"""Unlearning metrics: membership inference, gap to the retrained model, and the per-split evaluation."""

from medunlearn_monai.metrics.gap import GAP_METRICS, avg_gap
from medunlearn_monai.metrics.membership_inference import mia_efficacy, true_class_confidence

__all__ = ["GAP_METRICS", "avg_gap", "mia_efficacy", "true_class_confidence"]
