import numpy as np
import pytest
import torch

from medunlearn_monai.metrics import mia_efficacy, true_class_confidence

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
