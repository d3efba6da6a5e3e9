import numpy as np
import pytest
import torch

from medunlearn_monai.metrics.membership_inference import true_label_confidence
from medunlearn_monai.metrics.subgroups import accuracy, mean_auc, metric_suffix, per_observation_auc, subgroup_metrics

LABELS = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.float32)


def test_perfect_and_inverted_multilabel_scores():
    assert mean_auc(LABELS * 0.8 + 0.1, LABELS, multilabel=True) == pytest.approx(1.0)
    assert mean_auc(0.9 - LABELS * 0.8, LABELS, multilabel=True) == pytest.approx(0.0)
    assert accuracy(LABELS * 0.8 + 0.1, LABELS, multilabel=True) == 1.0
    assert per_observation_auc(LABELS * 0.8 + 0.1, LABELS, ["Pleural Effusion", "Edema"]) == {
        "auc_pleural_effusion": pytest.approx(1.0),
        "auc_edema": pytest.approx(1.0),
    }


def test_single_class_accuracy_and_auc_use_the_argmax_and_one_vs_rest():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1])
    assert accuracy(probabilities, labels, multilabel=False) == pytest.approx(2 / 3)
    assert mean_auc(probabilities, labels, multilabel=False) == pytest.approx(1.0)  # every positive ranks first
    crossing = torch.tensor([[0.5, 0.5], [0.2, 0.8], [0.7, 0.3]])  # class 1: 0.8 above 0.5, 0.3 below it
    assert mean_auc(crossing, labels, multilabel=False) == pytest.approx(0.5)


def test_subgroups_get_their_own_metrics_and_a_gap():
    good, bad = LABELS * 0.8 + 0.1, 0.9 - LABELS * 0.8
    probabilities = torch.cat([good, bad])
    labels = torch.cat([LABELS, LABELS])
    metrics = subgroup_metrics(probabilities, labels, ["Female"] * 4 + ["Male"] * 4, multilabel=True)
    assert metrics["auc_female"] == pytest.approx(1.0) and metrics["auc_male"] == pytest.approx(0.0)
    assert metrics["acc_female"] == 1.0 and metrics["acc_male"] == 0.0
    assert metrics["auc_gap"] == pytest.approx(1.0)
    assert "auc_gap" not in subgroup_metrics(good, LABELS, ["Female"] * 4, multilabel=True)


def test_auc_is_undefined_for_an_observation_without_both_values():
    assert np.isnan(per_observation_auc(torch.rand(3, 1), torch.ones(3, 1), ["Edema"])["auc_edema"])
    assert metric_suffix("Frontal/Lateral view") == "frontal_lateral_view"


def test_true_label_confidence_is_the_mean_probability_of_the_true_values():
    confidence = true_label_confidence(torch.tensor([[0.9, 0.2]]), torch.tensor([[1.0, 0.0]]))
    assert confidence == pytest.approx([0.85])
