"""Evaluate a model as an unlearning result: run the evaluator on each split, score, write the files beside the
model (``<model>.eval.json``, ``.items.json``, and ``.subjects.json`` for segmentation), log to MLflow and plot.

The bundles' ``evaluate`` workflows build one of these; the numbers come from :mod:`medunlearn_monai.metrics`.
"""

from medunlearn_monai.evaluation.classification import ClassificationEvaluation
from medunlearn_monai.evaluation.segmentation import SegmentationEvaluation
from medunlearn_monai.evaluation.unlearning import ReferenceMismatchError, UnlearningEvaluation

__all__ = ["ClassificationEvaluation", "ReferenceMismatchError", "SegmentationEvaluation", "UnlearningEvaluation"]
