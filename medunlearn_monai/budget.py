"""Unlearning's epoch budget, kept apart from training's: what the source model trained for, and a warning when
unlearning is set to cost as much as exact retraining."""

from __future__ import annotations

import logging
import os

from medunlearn_monai.records import read_json, record_path

logger = logging.getLogger(__name__)


def trained_epochs(source_model: str | os.PathLike) -> int | None:
    """The epochs the source model trained for (``max_epochs`` of its record); None without a record saying so."""
    path = record_path(source_model)
    epochs = read_json(path).get("max_epochs") if path.is_file() else None
    return int(epochs) if isinstance(epochs, int | float) and not isinstance(epochs, bool) else None


def warn_if_as_costly_as_training(unlearn_epochs: int, source_model: str | os.PathLike) -> None:
    """Warn when ``unlearn_epochs`` is at least the source model's training epochs.

    An unlearning epoch passes over the same training data as a training epoch, so such a run costs about as much
    as exact retraining, which would remove the subjects for certain.
    """
    trained = trained_epochs(source_model)
    if trained is not None and int(unlearn_epochs) >= trained:
        logger.warning(
            "unlearning runs %d epochs, as many as the source model trained for (%d): it costs about as much as "
            "exact retraining, which removes the subjects for certain; lower --unlearn_epochs or retrain.",
            int(unlearn_epochs),
            trained,
        )
