"""Re-initialising named submodules (the "Random Encoder" strategy)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.engine import Engine, Events
from torch import nn

from medunlearn_monai.strategies._modules import match_modules, validate_module_names
from medunlearn_monai.strategies._state import NoRunState


class ReinitializeModules(NoRunState):
    """Re-initialise the named submodules at the start of the run (e.g. the encoder: "Random Encoder").

    At ``Events.STARTED`` every submodule whose qualified name equals, or starts with
    ``name + "."`` for, one of ``module_names`` is reset with its own ``reset_parameters()``
    (convolutions and linear layers with PyTorch's default initialisation, batch norms to unit
    weight, zero bias and fresh running statistics). This is PyTorch's default initialisation,
    not a network's custom one (``Med3DSegmenter`` draws its convolutions Kaiming-normal). The
    reset runs under ``torch.random.fork_rng()`` seeded with ``seed``, so it is reproducible and
    leaves the global random state untouched.

    The optimizer's state (e.g. SGD momentum buffers) is not reset; attach to a fresh optimizer.

    Args:
        module_names: qualified submodule names, e.g. ``["conv1", "bn1", "layer1", "layer2",
            "layer3", "layer4"]`` for the encoder of ``Med3DSegmenter``.
        seed: seed of the re-initialisation.

    Raises:
        TypeError: when ``module_names`` is not a list of strings; (when the network is known) when a
            matched module holds its own parameters but has no ``reset_parameters()``.
        ValueError: when ``module_names`` is empty; (when the network is known) when a name matches
            no submodule.
    """

    def __init__(self, module_names: Sequence[str], seed: int = 0):
        self.module_names = validate_module_names(module_names)
        self.seed = seed

    def attach(self, engine: Engine) -> None:
        """Re-initialise at the start of the run; check the names now if the engine has its network already."""
        if isinstance(getattr(engine, "network", None), nn.Module):
            self._resettable_modules(engine.network)
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        modules = self._resettable_modules(engine.network)
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for module in modules:
                module.reset_parameters()

    def _resettable_modules(self, network: nn.Module) -> list[nn.Module]:
        matched = match_modules(network, self.module_names)
        stuck = [
            name
            for name, module in matched.items()
            if not callable(getattr(module, "reset_parameters", None)) and any(True for _ in module.parameters(False))
        ]
        if stuck:
            raise TypeError(
                f"modules {stuck} hold their own parameters but have no reset_parameters(), so they would keep "
                "their trained weights; give them a reset_parameters() method or leave them out of module_names."
            )
        return [module for module in matched.values() if callable(getattr(module, "reset_parameters", None))]
