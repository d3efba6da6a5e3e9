import numpy as np
import pytest
import torch

from medunlearn_monai.metrics import mia_efficacy, true_class_confidence
from medunlearn_monai.metrics.membership_inference import true_class_loss, true_label_loss

rng = np.random.default_rng(0)
MEMBERS = rng.uniform(0.9, 1.0, 400)  # training items: confident
NON_MEMBERS = rng.uniform(0.1, 0.6, 300)  # unseen items: unsure


def test_true_class_confidence_picks_the_label_column():
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert true_class_confidence(probabilities, torch.tensor([0, 2])) == pytest.approx([0.7, 0.6])


def test_forget_items_that_look_unseen_score_high():
    assert mia_efficacy(MEMBERS, NON_MEMBERS, rng.uniform(0.1, 0.6, 50)) > 0.9


def test_forget_items_that_look_memorised_score_low():
    assert mia_efficacy(MEMBERS, NON_MEMBERS, rng.uniform(0.9, 1.0, 50)) < 0.1


def test_empty_sets_are_refused():
    with pytest.raises(ValueError, match="empty: forget"):
        mia_efficacy(MEMBERS, NON_MEMBERS, np.array([]))


def test_nan_confidences_are_refused_naming_the_set():
    # sklearn's SVC would fail with "Input X contains NaN"; items without a known label must be left out first.
    with pytest.raises(ValueError, match="the test confidences hold NaN"):
        mia_efficacy(MEMBERS, np.append(NON_MEMBERS, np.nan), rng.uniform(0.1, 0.6, 50))


def test_per_item_loss_is_the_clipped_cross_entropy_of_the_true_class():
    probabilities = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    losses = true_class_loss(probabilities, torch.tensor([0, 1]))
    assert losses[0] == pytest.approx(-np.log(0.7))
    assert np.isfinite(losses[1]) and losses[1] == pytest.approx(-np.log(1e-12))  # zero probability, clipped


def test_per_item_loss_keeps_confident_items_apart_where_float32_rounds_p_true_to_one():
    probabilities = torch.tensor([[1.0, 1e-10, 1e-12], [1.0, 1e-7, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float32)
    losses = true_class_loss(probabilities, torch.tensor([0, 0, 0]))
    assert losses[:2] == pytest.approx([1.01e-10, 1e-7], rel=1e-5)
    assert losses[2] == 0.0 and str(losses[2]) == "0.0"


def test_multilabel_loss_averages_known_labels_and_skips_unknown_ones():
    probabilities = torch.tensor([[0.8, 0.4, 0.9], [0.5, 0.5, 0.5]])
    labels = torch.tensor([[1.0, 0.0, float("nan")], [float("nan")] * 3])
    losses = true_label_loss(probabilities, labels)
    assert losses[0] == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert np.isnan(losses[1])  # no known label, no loss
