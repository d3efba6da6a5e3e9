"""Memorisation-aware refinement (RUM): unlearn the forget set group by group, from least to most memorised."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events, EventsList
from ignite.engine.events import CallableEventWithFilter
from monai.engines.utils import default_prepare_batch

from medunlearn_monai.forget import FORGET_KEY
from medunlearn_monai.metrics.membership_inference import true_class_confidence, true_label_confidence
from medunlearn_monai.strategies._batch import forget_mask
from medunlearn_monai.strategies._modules import unwrap_network
from medunlearn_monai.strategies._state import has_run_state

# Events a group's handlers receive only while their group is active; run-level events (STARTED, epochs,
# COMPLETED) reach every group, so e.g. a saliency mask is still computed once at the start.
_ITERATION_EVENTS = ("ITERATION_STARTED", "ITERATION_COMPLETED", "GET_BATCH_STARTED", "GET_BATCH_COMPLETED")


class MemorisationRefinement:
    """Split the forget subjects into groups by how memorised they are and unlearn one group per phase.

    RUM (Zhao et al., NeurIPS 2024): forget sets mixing easy and highly memorised examples are hard to
    unlearn with one method; refining them into homogeneous groups and unlearning the groups in sequence,
    each with a method that suits it, works better. The memorisation proxy is the one the evaluations write
    per item: the source model's confidence in the true label (:func:`true_class_confidence`, or
    :func:`true_label_confidence` for multi-label), averaged over a subject's items; the least confident
    subjects are the most memorised (atypical examples the model fitted only because it saw them). Subjects
    are sorted from least to most memorised and cut into ``len(group_handlers)`` groups of equal size.

    The run has one phase of ``epochs_per_group`` epochs per group, in that order (the trainer's
    ``max_epochs`` must equal their total). In phase g the batches keep their retain items and the forget
    items of group g; other groups' forget items are left out. Group g's handlers (any strategy handlers,
    e.g. ``GradientAscent`` or ``RandomRelabel``) act on the iterations of phase g only; an empty list
    leaves that group's items out too, i.e. fine-tuning on the retain data for that phase. The loader must
    hold retain items (``ForgetSplit.flagged()``) so no batch ends up empty.

    Args:
        forget_loader: collated forget batches with true labels and a ``subject`` key, to score memorisation.
        group_handlers: one list of strategy handlers per group, least memorised group first.
        epochs_per_group: epochs of each phase (>= 1).
        multilabel: labels are 0/1 vectors; the proxy is then the mean true-label confidence.
        subject_key: batch key of the subject identifier.
        forget_key: batch key of the per-item forget flag.
        prepare_batch: turns a batch into ``(inputs, targets)``; MONAI's default reads image/label.

    Raises:
        ValueError: for no groups or ``epochs_per_group`` below 1.
        TypeError: when a group handler has no ``state_dict``/``load_state_dict`` (run checkpoints need them).
    """

    def __init__(
        self,
        forget_loader: Iterable,
        group_handlers: Sequence[Sequence[Any]],
        epochs_per_group: int = 1,
        multilabel: bool = False,
        subject_key: str = "subject",
        forget_key: str = FORGET_KEY,
        prepare_batch: Callable = default_prepare_batch,
    ):
        if not group_handlers:
            raise ValueError("group_handlers must hold at least one group (a list of handlers, possibly empty).")
        if epochs_per_group < 1:
            raise ValueError(f"epochs_per_group must be at least 1, got {epochs_per_group}.")
        for group, handlers in enumerate(group_handlers):
            for handler in handlers:
                if not has_run_state(handler):
                    raise TypeError(
                        f"group {group}'s {type(handler).__name__} has no state_dict/load_state_dict, so a resumed "
                        "run could not continue its random draws: give it both (an empty state when it keeps none)."
                    )
        self.forget_loader = forget_loader
        self.group_handlers = [list(handlers) for handlers in group_handlers]
        self.epochs_per_group = epochs_per_group
        self.multilabel = multilabel
        self.subject_key = subject_key
        self.forget_key = forget_key
        self.prepare_batch = prepare_batch
        self.groups: dict[str, int] = {}  # subject -> group index; kept in memory only, never written

    def state_dict(self) -> dict[str, Any]:
        """Every group handler's state (e.g. label generators), saved in run checkpoints.

        The groups are not saved: a resumed run scores them again when it starts, on the source model.
        """
        return {
            f"{group}.{index}": handler.state_dict()
            for group, handlers in enumerate(self.group_handlers)
            for index, handler in enumerate(handlers)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the handlers' states from :meth:`state_dict`.

        Raises:
            ValueError: when ``state`` lacks the state of a handler that keeps one.
        """
        for group, handlers in enumerate(self.group_handlers):
            for index, handler in enumerate(handlers):
                if f"{group}.{index}" in state:
                    handler.load_state_dict(state[f"{group}.{index}"])
                elif handler.state_dict():
                    raise ValueError(
                        f"the checkpoint holds no state of group {group}'s {type(handler).__name__}: it was made with "
                        "other group handlers."
                    )

    def attach(self, engine: Engine) -> None:
        """Group at the start, filter every batch first, then attach each group's handlers behind a gate."""
        engine.add_event_handler(Events.STARTED, self)
        engine.add_event_handler(Events.ITERATION_STARTED, self.keep_active_items)
        for group, handlers in enumerate(self.group_handlers):
            gated = _GroupGate(engine, lambda group=group: self.active_group(engine) == group)
            for handler in handlers:
                handler.attach(gated)

    def __call__(self, engine: Engine) -> None:
        total = self.epochs_per_group * len(self.group_handlers)
        if engine.state.max_epochs != total:
            raise ValueError(
                f"the trainer runs {engine.state.max_epochs} epochs but {len(self.group_handlers)} groups of "
                f"{self.epochs_per_group} epochs need max_epochs = {total}."
            )
        self.groups = self.memorisation_groups(engine)

    def active_group(self, engine: Engine) -> int:
        """The group whose phase the trainer is in (epochs count from 1)."""
        return min((engine.state.epoch - 1) // self.epochs_per_group, len(self.group_handlers) - 1)

    def memorisation_groups(self, engine: Engine) -> dict[str, int]:
        """Each forget subject's group: subjects sorted from most to least confident, cut into equal groups."""
        confidence: dict[str, list[float]] = {}
        network = unwrap_network(engine.network)
        was_training = network.training
        network.eval()
        with torch.no_grad():
            for batch in self.forget_loader:
                inputs, targets = self.prepare_batch(batch, engine.state.device, engine.non_blocking)[:2]
                logits = network(inputs).float().cpu()
                if self.multilabel:
                    scores = true_label_confidence(torch.sigmoid(logits), targets.cpu())
                else:
                    scores = true_class_confidence(torch.softmax(logits, dim=1), targets.cpu())
                for subject, score in zip(batch[self.subject_key], scores, strict=True):
                    confidence.setdefault(str(subject), []).append(float(score))
        network.train(was_training)
        ranked = sorted(confidence, key=lambda subject: -float(np.mean(confidence[subject])))
        cuts = np.array_split(np.arange(len(ranked)), len(self.group_handlers))
        return {ranked[index]: group for group, indices in enumerate(cuts) for index in indices}

    def keep_active_items(self, engine: Engine) -> None:
        """Leave out the forget items of inactive groups (and of the active one when it has no handlers)."""
        batch = engine.state.batch
        flags = forget_mask(engine, self.forget_key)
        group = self.active_group(engine)
        unlearned_here = bool(self.group_handlers[group])
        keep = [
            not flag or (unlearned_here and self.groups.get(str(subject)) == group)
            for flag, subject in zip(flags.tolist(), batch[self.subject_key], strict=True)
        ]
        if not any(keep):
            raise ValueError(
                "a batch holds no item of the active group and no retain item: MemorisationRefinement needs a "
                "loader with retain items (ForgetSplit.flagged())."
            )
        if all(keep):
            return
        index = torch.tensor([position for position, kept in enumerate(keep) if kept])
        engine.state.batch = {key: _select(value, index, len(keep)) for key, value in batch.items()}


def _select(value: Any, index: torch.Tensor, count: int) -> Any:
    """Items ``index`` of one collated batch entry (tensor or list); other entries are returned unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == count:
        return value[index]
    if isinstance(value, (list, tuple)) and len(value) == count:
        return [value[position] for position in index.tolist()]
    return value


class _GroupGate:
    """The trainer as one group's handlers see it: iteration-level handlers run only while ``is_active()``."""

    def __init__(self, engine: Engine, is_active: Callable[[], bool]):
        self._engine = engine
        self._is_active = is_active

    def add_event_handler(self, event: Any, handler: Callable, *args: Any, **kwargs: Any) -> Any:
        if _is_iteration_event(event):

            def gated(engine: Engine, *event_args: Any, **event_kwargs: Any) -> None:
                if self._is_active():
                    handler(engine, *event_args, **event_kwargs)

            return self._engine.add_event_handler(event, gated, *args, **kwargs)
        return self._engine.add_event_handler(event, handler, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _is_iteration_event(event: Any) -> bool:
    """Whether ``event`` fires per iteration: ignite's iteration events or MONAI's IterationEvents."""
    if isinstance(event, EventsList):
        return any(_is_iteration_event(item) for item in event)
    if isinstance(event, CallableEventWithFilter) and event.name in _ITERATION_EVENTS:
        return True
    return type(event).__name__ == "IterationEvents"
