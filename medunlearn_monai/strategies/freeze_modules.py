"""Freezing named submodules bit-exactly during training (the "Fix Decoder" strategy)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.engine import Engine
from torch import nn

from medunlearn_monai.strategies._frozen import FrozenWeights
from medunlearn_monai.strategies._modules import match_modules, validate_module_names


class FreezeModules(FrozenWeights):
    """Keep the named submodules' parameters and buffers bit-identical while the rest of the network learns.

    Every submodule whose qualified name equals, or starts with ``name + "."`` for, one of
    ``module_names`` is frozen (e.g. ``["conv_seg"]``, the decoder of ``Med3DSegmenter``: "Fix
    Decoder"). At the start of the run their parameters and buffers (batch-norm running statistics
    included) are copied; after every backward pass their gradients are dropped (set to ``None``,
    so the optimizer skips them and keeps no momentum for them); after every optimizer step the
    copies are written back, so neither weight decay, momentum nor batch-norm statistic updates can
    move them.

    The network is still in training mode during the trainer's forward pass, so frozen batch norms
    normalise with the batch's statistics there; only their stored statistics are kept.

    Args:
        module_names: qualified submodule names to freeze.

    Raises:
        TypeError: when ``module_names`` is not a list of strings.
        ValueError: when ``module_names`` is empty; (when the network is known) when a name matches
            no submodule.
    """

    def __init__(self, module_names: Sequence[str]):
        super().__init__()
        self.module_names = validate_module_names(module_names)
        self._tensors: dict[str, torch.Tensor] = {}
        self._parameters: list[nn.Parameter] = []

    def attach(self, engine: Engine) -> None:
        """Check the names against the network when it is known, then attach as :class:`FrozenWeights` does."""
        if isinstance(getattr(engine, "network", None), nn.Module):
            match_modules(engine.network, self.module_names)
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        """Copy the named submodules' parameters and buffers."""
        self._tensors, self._parameters = {}, []
        seen: set[int] = set()
        for module_name, module in match_modules(engine.network, self.module_names).items():
            for name, parameter in module.named_parameters(recurse=False):
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    self._tensors[f"{module_name}.{name}"] = parameter
                    self._parameters.append(parameter)
            for name, buffer in module.named_buffers(recurse=False):
                if id(buffer) not in seen:
                    seen.add(id(buffer))
                    self._tensors[f"{module_name}.{name}"] = buffer
        self.frozen_values = {name: tensor.detach().clone() for name, tensor in self._tensors.items()}

    def mask_gradients(self, engine: Engine) -> None:
        """Drop the gradients of the frozen parameters, so the optimizer step skips them."""
        for parameter in self._parameters:
            parameter.grad = None

    @torch.no_grad()
    def restore_frozen(self, engine: Engine) -> None:
        """Write the frozen parameters and buffers back to their starting values after the optimizer step."""
        for name, tensor in self._tensors.items():
            tensor.copy_(self.frozen_values[name])
