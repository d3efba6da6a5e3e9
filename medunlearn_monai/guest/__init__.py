"""Unlearning for MONAI bundles we did not write (model-zoo bundles, a user's own), without editing them.

A guest bundle's own training config list runs with overlay configs shipped here (``configs/``) layered after it:
an adapter's layout file (:mod:`~medunlearn_monai.guest.adapter`) says where the guest keeps its items, trainer and
handlers; our overlays give its trainer the retain data (or flagged retain and forget items), our strategy handlers,
tracker, erasure certificate and checkpoints, and score the model on retain / forget / test data with our evaluation.
Subjects are read from the guest's items (:mod:`~medunlearn_monai.guest.subjects`).
"""

from medunlearn_monai.guest.subjects import GuestDataError, subject_id, with_subjects
from medunlearn_monai.guest.training import checkpoint_objects, learning_rate

__all__ = ["GuestDataError", "checkpoint_objects", "learning_rate", "subject_id", "with_subjects"]
