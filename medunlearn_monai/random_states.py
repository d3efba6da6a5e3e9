"""The random states a training epoch draws from, saved and restored so a resumed run draws what it would have."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable, Transform


class RandomStates:
    """The random states an epoch draws from, as an object ignite's ``Checkpoint`` can save and load.

    Saved: torch's CPU (and CUDA) generators, which pick the data loader's shuffle order; NumPy's and
    Python's global generators; and the NumPy generator MONAI keeps in every random transform of the
    training data. Everything is stored as tensors and plain values, so it loads with ``weights_only``.

    Args:
        transform: the training dataset's transform, searched for random transforms (nested ones included).
    """

    def __init__(self, transform: Any = None):
        self.transforms = random_transforms(transform)

    def state_dict(self) -> dict[str, Any]:
        """The current random states."""
        state = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(np.random.get_state()),
            "python": random.getstate(),
            "transforms": transform_states(self.transforms),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore random states saved by :meth:`state_dict`.

        Raises:
            ValueError: when the saved transforms do not match this run's random transforms.
        """
        if len(state["transforms"]) != len(self.transforms):
            raise ValueError(
                f"the checkpoint holds the states of {len(state['transforms'])} random transforms, this run has "
                f"{len(self.transforms)}: it was made with another preprocessing."
            )
        torch.set_rng_state(state["torch"])
        np.random.set_state(_numpy_tuple(state["numpy"]))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        set_transform_states(self.transforms, state["transforms"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def transform_states(transforms: Sequence[Randomizable]) -> list[dict[str, Any]]:
    """The NumPy generator state of each random transform, as tensors and plain values."""
    return [_numpy_state(transform.R.get_state()) for transform in transforms]


def set_transform_states(transforms: Sequence[Randomizable], states: Sequence[Mapping[str, Any]]) -> None:
    """Restore the generators of ``transforms`` from :func:`transform_states`.

    Raises:
        ValueError: when ``states`` were saved from another number of random transforms.
    """
    if len(states) != len(transforms):
        raise ValueError(
            f"the checkpoint holds the states of {len(states)} random transforms, this run has {len(transforms)}: "
            "it was made with another preprocessing."
        )
    for transform, saved in zip(transforms, states, strict=True):
        transform.R.set_state(_numpy_tuple(saved))


def random_transforms(transform: Any) -> list[Randomizable]:
    """Every random transform reachable from ``transform``, in a fixed order.

    MONAI's dictionary transforms keep the generator they draw from in an inner transform (``RandCropByPosNegLabeld``
    draws from its ``cropper``), so attributes are searched too, as MONAI's ``set_rnd`` does when seeding workers.
    """
    found: list[Randomizable] = []
    seen: set[int] = set()

    def visit(value: Any) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, Randomizable):
            found.append(value)
        if isinstance(value, (list, tuple)):
            children: Iterable[Any] = value
        elif isinstance(value, Mapping):
            children = value.values()
        elif isinstance(value, (Transform, Randomizable)):
            children = vars(value).values()
        else:
            return
        for child in children:
            visit(child)

    visit(transform)
    return found


def _numpy_state(state: tuple) -> dict[str, Any]:
    name, keys, position, has_gauss, cached_gaussian = state
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _numpy_tuple(state: Mapping[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["name"], keys, state["position"], state["has_gauss"], state["cached_gaussian"]
