"""Gap to the retrained model: how far an approximate method lands from exact unlearning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

GAP_METRICS: tuple[str, ...] = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy")


def avg_gap(metrics: Mapping[str, float], reference: Mapping[str, float], names: Sequence[str] = GAP_METRICS) -> float:
    """Mean absolute difference, in percentage points, between ``metrics`` and the retrained ``reference``.

    With the default names this is the literature's "Avg. Gap" over UA, RA, TA and MIA efficacy
    (|UA - UA'| equals |forget_acc - forget_acc'|). Metrics are fractions in [0, 1].

    Raises:
        KeyError: when a metric is missing from either side.
    """
    missing = [name for name in names if name not in metrics or name not in reference]
    if missing:
        raise KeyError(f"gap to retrain needs {', '.join(missing)} for both the model and the retrained reference.")
    return 100.0 * sum(abs(metrics[name] - reference[name]) for name in names) / len(names)
