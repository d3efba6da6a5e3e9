"""Saliency mask (the mask of SalUn): only weights salient for the forget data may change."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from ignite.engine import Engine
from monai.engines.utils import default_prepare_batch

from medunlearn_monai.strategies._frozen import FrozenWeights
from medunlearn_monai.strategies._modules import unwrap_network


class SaliencyMask(FrozenWeights):
    """Restrict training to the ``ratio`` of weights with the largest forget-loss gradient.

    At the start of the run the gradient of the loss on the forget data is accumulated (network in
    eval mode) and one global ranking of ``|grad|`` over all parameters, BN weights and biases
    included, keeps the top ``ratio``. During training gradients of the other weights are zeroed
    and, after every optimizer step, those weights are written back to their starting values, so
    neither weight decay nor momentum can move them: they stay bit-identical.

    Under ``DistributedDataParallel`` every rank ranks the weights of the unwrapped network on the whole forget loader
    (do not shard it), without all-reducing gradients: the ranks hold the same weights, so each derives the same mask
    on its own and none waits on another.

    Args:
        forget_loader: iterable of collated forget batches (true labels) to rank weights on.
        ratio: fraction of all weights that may change, in (0, 1].
        prepare_batch: turns a batch into ``(inputs, targets)``; MONAI's default reads image/label.

    Raises:
        ValueError: when ``ratio`` is outside (0, 1].
    """

    def __init__(self, forget_loader: Iterable, ratio: float = 0.5, prepare_batch: Callable = default_prepare_batch):
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}.")
        super().__init__()
        self.forget_loader = forget_loader
        self.ratio = ratio
        self.prepare_batch = prepare_batch
        self.masks: dict[str, torch.Tensor] = {}

    def __call__(self, engine: Engine) -> None:
        """Rank the weights by forget-loss gradient magnitude and keep the mask and the starting values."""
        network = unwrap_network(engine.network)
        saliency = self._forget_gradient_magnitudes(engine)
        scores = torch.cat([magnitude.flatten() for magnitude in saliency.values()])
        keep = max(1, round(self.ratio * scores.numel()))
        chosen = torch.zeros_like(scores, dtype=torch.bool)
        chosen[torch.topk(scores, keep, sorted=False).indices] = True
        offset = 0
        for name, parameter in network.named_parameters():
            count = parameter.numel()
            self.masks[name] = chosen[offset : offset + count].view_as(parameter)
            self.frozen_values[name] = parameter.detach().clone()
            offset += count
        network.zero_grad(set_to_none=True)

    def _forget_gradient_magnitudes(self, engine: Engine) -> dict[str, torch.Tensor]:
        network = unwrap_network(engine.network)
        network.eval()
        network.zero_grad(set_to_none=True)
        for batch in self.forget_loader:
            inputs, targets = self.prepare_batch(batch, engine.state.device, engine.non_blocking)[:2]
            engine.loss_function(network(inputs), targets).mean().backward()
        return {
            name: torch.zeros_like(parameter) if parameter.grad is None else parameter.grad.detach().abs()
            for name, parameter in network.named_parameters()
        }

    def mask_gradients(self, engine: Engine) -> None:
        """Zero the gradient of every non-salient weight."""
        for name, parameter in unwrap_network(engine.network).named_parameters():
            if parameter.grad is not None:
                parameter.grad.mul_(self.masks[name])

    @torch.no_grad()
    def restore_frozen(self, engine: Engine) -> None:
        """Write non-salient weights back to their starting values after the optimizer step."""
        for name, parameter in unwrap_network(engine.network).named_parameters():
            parameter.copy_(torch.where(self.masks[name], parameter, self.frozen_values[name]))
