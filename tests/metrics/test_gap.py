import pytest

from medunlearn_monai.metrics import avg_gap


def test_avg_gap_is_mean_absolute_difference_in_points():
    model = {"forget_acc": 0.80, "retain_acc": 0.95, "test_acc": 0.70, "mia_efficacy": 0.30}
    retrained = {"forget_acc": 0.70, "retain_acc": 0.97, "test_acc": 0.72, "mia_efficacy": 0.40}
    assert avg_gap(model, retrained) == pytest.approx((10 + 2 + 2 + 10) / 4)
    assert avg_gap(retrained, retrained) == 0.0


def test_avg_gap_names_missing_metrics():
    with pytest.raises(KeyError, match="mia_efficacy"):
        avg_gap({"forget_acc": 1, "retain_acc": 1, "test_acc": 1}, {"forget_acc": 1, "retain_acc": 1, "test_acc": 1})
