"""Scores of a segmenter from decollated evaluator output: MAE inputs and the per-subject loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.utils import convert_to_tensor
from torch.nn import functional

from medunlearn_monai.metrics.membership_inference import PROBABILITY_FLOOR

SEGMENTATION_GAP_METRICS = ("forget_dice", "retain_dice", "test_dice")
PER_SUBJECT_METRICS = ("dice", "mae", "hard_mae")


def foreground_probability_and_mask(output: Sequence[Mapping[str, torch.Tensor]]) -> tuple[list, list]:
    """``(y_pred, y)`` for MAE: the predicted foreground probability and the true foreground mask.

    Reads the decollated evaluator output: ``prob`` (softmax probabilities, background first) and
    ``label`` (one-hot). Foreground = every class but background, so MAE = mean over voxels of
    ``|P(foreground) - [label > 0]|``, in [0, 1], lower is better.
    """
    probabilities = [1.0 - item["prob"][:1] for item in output]
    masks = [1.0 - item["label"][:1] for item in output]
    return probabilities, masks


def misclassified_voxels(output: Sequence[Mapping[str, torch.Tensor]]) -> tuple[list, list]:
    """``(y_pred, y)`` for the hard MAE: 1 where the argmax prediction's class differs from the true class, and 0.

    Reads ``pred`` and ``label`` (both one-hot) of the decollated evaluator output, so MONAI's ``MeanAbsoluteError``
    on them is the fraction of misclassified voxels (0 is perfect). Unlike the soft MAE
    (:func:`foreground_probability_and_mask`) it moves only when a voxel's predicted class changes.
    """
    wrong = [(item["pred"].argmax(0) != item["label"].argmax(0)).float()[None] for item in output]
    return wrong, [torch.zeros_like(voxels) for voxels in wrong]


def mean_voxel_cross_entropy(item: Mapping[str, torch.Tensor]) -> float:
    """Cross-entropy of one subject, averaged over voxels, from decollated evaluator output.

    Reads ``prob`` (softmax probabilities, channel first) and ``label`` (one-hot), as
    :func:`foreground_probability_and_mask` does; probabilities are clipped so a voxel whose
    true class got zero probability costs a large, finite loss.

    Raises:
        KeyError: when the output has no ``prob``.
        ValueError: when ``prob`` and ``label`` differ in shape (``label`` not one-hot).
    """
    if "prob" not in item:
        raise KeyError("per-subject loss needs softmax probabilities in 'prob': copy 'pred' to 'prob' after softmax.")
    probabilities = convert_to_tensor(item["prob"], track_meta=False).float()
    label = convert_to_tensor(item["label"], track_meta=False)
    if probabilities.shape != label.shape:
        raise ValueError(
            f"'prob' {tuple(probabilities.shape)} and 'label' {tuple(label.shape)} differ: the label must be one-hot."
        )
    log_probabilities = probabilities.clamp_min(PROBABILITY_FLOOR).log()
    return float(functional.nll_loss(log_probabilities[None], label.argmax(0)[None]))
