"""Selective Synaptic Dampening (SSD): shrink the weights the forget data relies on far more than the rest does."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import default_prepare_batch
from torch import nn

from medunlearn_monai.strategies._modules import unwrap_network
from medunlearn_monai.strategies._state import NoRunState


class SelectiveSynapticDampening(NoRunState):
    """SSD (Foster, Schoepf, Brintrup, AAAI 2024): dampen the forget data's own weights, without training.

    When the run starts (after the source model is loaded) the diagonal Fisher importance of every parameter element
    is estimated twice, as in the authors' code: the squared gradient of the batch's mean loss, averaged over the
    batches (not the items) of ``train_loader`` (the whole training data, ``I_D``) and of ``forget_loader`` (``I_f``),
    with the network in eval mode so BatchNorm statistics stay as loaded. Every element with
    ``I_f > selection_weight * I_D`` is multiplied by ``min(dampening_constant * I_D / I_f, 1)``; all others stay
    bit-identical. The run then terminates before its first iteration: no optimizer step is taken, and ignite still
    fires ``COMPLETED``, so the model file, its record (the elapsed seconds include this work) and the certificate are
    written as after training.

    Batch means make the importances depend on the batch size: give both loaders the same one. Under
    ``DistributedDataParallel`` every rank computes both importances on the whole loaders (do not shard them), so all
    ranks dampen alike without communicating.

    Args:
        train_loader: iterable of collated batches of all training items (retain and forget), true labels.
        forget_loader: iterable of collated forget batches, true labels.
        selection_weight: ``alpha``: how many times more important to the forget data an element must be (> 0).
        dampening_constant: ``lambda``: scales the dampening factor (> 0).
        prepare_batch: turns a batch into ``(inputs, targets)``; MONAI's default reads image/label.

    Raises:
        ValueError: when ``selection_weight`` or ``dampening_constant`` is not a positive finite number.
    """

    def __init__(
        self,
        train_loader: Iterable,
        forget_loader: Iterable,
        selection_weight: float = 10.0,
        dampening_constant: float = 1.0,
        prepare_batch: Callable = default_prepare_batch,
    ):
        for name, value in (("selection_weight", selection_weight), ("dampening_constant", dampening_constant)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value}.")
        self.train_loader = train_loader
        self.forget_loader = forget_loader
        self.selection_weight = selection_weight
        self.dampening_constant = dampening_constant
        self.prepare_batch = prepare_batch
        self.dampened_count = 0

    def attach(self, engine: Engine) -> None:
        """Dampen and end the run when it starts."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        network = unwrap_network(engine.network)
        training, forget = (
            fisher_importance(
                network, loader, engine.loss_function, engine.state.device, self.prepare_batch, engine.non_blocking
            )
            for loader in (self.train_loader, self.forget_loader)
        )
        self.dampened_count = dampen(network, training, forget, self.selection_weight, self.dampening_constant)
        engine.logger.info(
            "SSD dampened %d of %d parameter elements; ending the run without training.",
            self.dampened_count,
            sum(parameter.numel() for parameter in network.parameters()),
        )
        engine.terminate()


def fisher_importance(
    network: nn.Module,
    loader: Iterable,
    loss_function: Callable,
    device: torch.device | str,
    prepare_batch: Callable = default_prepare_batch,
    non_blocking: bool = False,
) -> dict[str, torch.Tensor]:
    """Per parameter, the squared gradient of each batch's mean loss, averaged over the batches (network in eval mode).

    Raises:
        ValueError: when ``loader`` yields no batch.
    """
    network.eval()
    importance = {name: torch.zeros_like(parameter) for name, parameter in network.named_parameters()}
    batches = 0
    for batch in loader:
        inputs, targets = prepare_batch(batch, device, non_blocking)[:2]
        network.zero_grad(set_to_none=True)
        loss_function(network(inputs), targets).mean().backward()
        for name, parameter in network.named_parameters():
            if parameter.grad is not None:
                importance[name] += parameter.grad.detach().square()
        batches += 1
    network.zero_grad(set_to_none=True)
    if batches == 0:
        raise ValueError("SSD needs data to estimate parameter importance, but a loader yielded no batch.")
    return {name: value / batches for name, value in importance.items()}


@torch.no_grad()
def dampen(
    network: nn.Module,
    training_importance: Mapping[str, torch.Tensor],
    forget_importance: Mapping[str, torch.Tensor],
    selection_weight: float,
    dampening_constant: float,
) -> int:
    """Multiply each selected element (``I_f > selection_weight * I_D``) by ``min(dampening_constant * I_D / I_f, 1)``.

    Returns:
        The number of selected elements; the others are left bit-identical.
    """
    selected_count = 0
    for name, parameter in network.named_parameters():
        training, forget = training_importance[name], forget_importance[name]
        selected = forget > selection_weight * training
        factor = (dampening_constant * training / forget).clamp(max=1.0)  # NaN where I_f = 0, never selected there
        parameter.copy_(torch.where(selected, parameter * factor, parameter))
        selected_count += int(selected.sum())
    return selected_count
