"""Reading model and checkpoint files that may come from elsewhere: tensors only, never code.

``torch.load(weights_only=True)`` already refuses a pickle that would import or call anything but
tensors and plain containers; torch's refusal says neither which file nor what to do, so it is
turned here into :class:`UntrustedCheckpointError` naming both.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class UntrustedCheckpointError(ValueError):
    """A model or checkpoint file holds more than tensors: unpickling it could run code, so it is not read."""


def untrusted_checkpoint_error(
    path: str | os.PathLike, error: pickle.UnpicklingError
) -> UntrustedCheckpointError | None:
    """Our error for torch's weights-only refusal of a reference to code in ``path``; None for another unpickling
    error (torch also says "Weights only load failed" for a corrupt file, but names no global then)."""
    refused = _REFUSED_GLOBAL.search(str(error)) if _WEIGHTS_ONLY_REFUSAL in str(error) else None
    if refused is None:
        return None
    return UntrustedCheckpointError(
        f"{path} was refused: it refers to {refused.group(1)}, which could run code when unpickled. Only files of "
        "tensors (a state_dict saved with torch.save(model.state_dict(), path)) are loaded; re-save a file you trust "
        "that way."
    )


@contextmanager
def refusing_code(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise torch's weights-only refusal of a reference to code in ``path`` as :class:`UntrustedCheckpointError`."""
    try:
        yield
    except pickle.UnpicklingError as error:
        refusal = untrusted_checkpoint_error(path, error)
        if refusal is None:
            raise
        raise refusal from error


def load_weights(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a refusal that names the file.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        UntrustedCheckpointError: when the file holds anything but tensors and plain containers.
    """
    with refusing_code(path):
        return torch.load(path, map_location=map_location, weights_only=True)


class SafeCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (it reads with ``weights_only=True``) whose refusal of a file that could run
    code names the file as an :class:`UntrustedCheckpointError`; the arguments are ``CheckpointLoader``'s."""

    def __call__(self, engine: Engine) -> None:
        with refusing_code(self.load_path):
            super().__call__(engine)
