"""Stop before over-forgetting: end an unlearning run once the forget data is as unknown as unseen data."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import default_prepare_batch

from medunlearn_monai.metrics.subgroups import accuracy
from medunlearn_monai.strategies._modules import unwrap_network


class StopBeforeOverForgetting:
    """Terminate the trainer when its accuracy on the forget data falls to the original model's validation accuracy.

    A model that never saw the forget items scores on them about what it scores on unseen data; pushing
    forget accuracy below that (relabelling methods do) is over-forgetting, and per-example attacks detect
    it (He et al., TPAMI 2025). At the start of the run the *target* is the loaded model's accuracy on
    ``reference_loader`` (the validation data). From ``min_epochs`` completed epochs on, the forget accuracy
    is measured every ``interval`` iterations (default: at every epoch end) and the run ends at the first
    measurement at or below the target. The trainer's ``max_epochs`` is the maximum; :attr:`history` holds
    ``(iteration, forget accuracy)`` of every measurement and :attr:`stopped_at` the iteration it ended at.

    Args:
        forget_loader: collated forget batches with their true labels.
        reference_loader: collated validation batches (data the model never trained on).
        min_epochs: epochs that always run before the first measurement (>= 0).
        interval: iterations between measurements; None measures at the end of every epoch.
        multilabel: labels are 0/1 vectors (accuracy per known observation at 0.5) instead of class indices.
        prepare_batch: turns a batch into ``(inputs, targets)``; MONAI's default reads image/label.

    Raises:
        ValueError: for a negative ``min_epochs`` or a non-positive ``interval``.
    """

    def __init__(
        self,
        forget_loader: Iterable,
        reference_loader: Iterable,
        min_epochs: int = 1,
        interval: int | None = None,
        multilabel: bool = False,
        prepare_batch: Callable = default_prepare_batch,
    ):
        if min_epochs < 0:
            raise ValueError(f"min_epochs must not be negative, got {min_epochs}.")
        if interval is not None and interval < 1:
            raise ValueError(f"interval must be a positive number of iterations, got {interval}.")
        self.forget_loader = forget_loader
        self.reference_loader = reference_loader
        self.min_epochs = min_epochs
        self.interval = interval
        self.multilabel = multilabel
        self.prepare_batch = prepare_batch
        self.target: float | None = None
        self.history: list[tuple[int, float]] = []
        self.stopped_at: int | None = None

    def state_dict(self) -> dict[str, float | None]:
        """The target, saved in run checkpoints: a resumed run must not re-measure it on a half-unlearned model."""
        return {"target": self.target}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        """Restore the target from :meth:`state_dict`."""
        self.target = state["target"]

    def attach(self, engine: Engine) -> None:
        """Measure the target at the start (after the source model is loaded), forget accuracy during the run."""
        engine.add_event_handler(Events.STARTED, self)
        event = Events.EPOCH_COMPLETED if self.interval is None else Events.ITERATION_COMPLETED(every=self.interval)
        engine.add_event_handler(event, self.check)

    def __call__(self, engine: Engine) -> None:
        if self.target is None:
            self.target = self.loader_accuracy(engine, self.reference_loader)

    def check(self, engine: Engine) -> None:
        """Measure forget accuracy once ``min_epochs`` are done; terminate at or below the target."""
        if engine.state.iteration < self.min_epochs * engine.state.epoch_length:
            return
        forget_accuracy = self.loader_accuracy(engine, self.forget_loader)
        self.history.append((engine.state.iteration, forget_accuracy))
        if forget_accuracy <= self.target:
            self.stopped_at = engine.state.iteration
            engine.terminate()

    @torch.no_grad()
    def loader_accuracy(self, engine: Engine, loader: Iterable) -> float:
        """Accuracy of the trainer's network on ``loader`` in eval mode; the network's mode is restored."""
        network = unwrap_network(engine.network)
        was_training = network.training
        network.eval()
        outputs, labels = [], []
        for batch in loader:
            inputs, targets = self.prepare_batch(batch, engine.state.device, engine.non_blocking)[:2]
            outputs.append(network(inputs).float().cpu())
            labels.append(torch.as_tensor(targets).cpu())
        network.train(was_training)
        logits, truth = torch.cat(outputs), torch.cat(labels)
        probabilities = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)
        return accuracy(probabilities, truth, self.multilabel)
