"""Selecting submodules by qualified name, for strategies that reset or freeze parts of a network."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def validate_module_names(module_names: Sequence[str]) -> tuple[str, ...]:
    """Check ``module_names`` is a non-empty sequence of non-empty qualified module names.

    Raises:
        TypeError: when ``module_names`` is a single string or holds non-strings.
        ValueError: when it is empty or holds an empty name.
    """
    if isinstance(module_names, str) or not isinstance(module_names, Sequence):
        raise TypeError(f"module_names must be a list of module names such as ['conv_seg'], got {module_names!r}.")
    if not module_names:
        raise ValueError("module_names must name at least one module.")
    for name in module_names:
        if not isinstance(name, str):
            raise TypeError(f"module names must be strings, got {name!r}.")
        if not name:
            raise ValueError("module names must not be empty (an empty name would select the whole network).")
    return tuple(module_names)


def unwrap_network(network: nn.Module) -> nn.Module:
    """The user's module inside ``torch.compile``, DataParallel or DistributedDataParallel wrappers."""
    while True:
        if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            network = network.module
        elif hasattr(network, "_orig_mod") and isinstance(network._orig_mod, nn.Module):
            network = network._orig_mod
        else:
            return network


def match_modules(network: nn.Module, module_names: Sequence[str]) -> dict[str, nn.Module]:
    """Every submodule whose qualified name equals, or starts with ``name + "."`` for, one of ``module_names``.

    Returns:
        The matching submodules by qualified name, in the network's order, each listed once.

    Raises:
        ValueError: when a name matches no submodule; the message lists the network's top-level children.
    """
    network = unwrap_network(network)
    named = dict(network.named_modules())
    matched: set[str] = set()
    for name in module_names:
        hits = {qualified for qualified in named if qualified == name or qualified.startswith(name + ".")}
        if not hits:
            children = [child for child, _ in network.named_children()]
            raise ValueError(
                f"module name {name!r} matches no submodule of {type(network).__name__}; "
                f"its top-level children are {children}."
            )
        matched |= hits
    return {qualified: module for qualified, module in named.items() if qualified in matched}
