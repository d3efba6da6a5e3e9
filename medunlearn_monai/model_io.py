"""Model files: written atomically beside a JSON record of how they were made; inputs never overwritten.

The files beside a model (record, evaluation, certificate), their names and how they are read and written live in
:mod:`medunlearn_monai.records`; :func:`~medunlearn_monai.records.read_record`, which reads back the record
:class:`ModelWriter` writes, is importable from here too.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medunlearn_monai.flags import as_flag
from medunlearn_monai.records import file_sha256, record_path, write_atomically, write_json
from medunlearn_monai.records import read_record as read_record  # the record ModelWriter writes, read back
from medunlearn_monai.safe_loading import UntrustedCheckpointError, load_weights
from medunlearn_monai.tracking import SECONDS_BEFORE_RESUME, engine_seconds, samples_seen


def check_writable(path: str | os.PathLike, source_model: str | os.PathLike | None = None) -> None:
    """Fail before any work when the model file ``path`` could not be written when the run ends.

    Nothing is created: the nearest existing folder above ``path`` must be a writable folder.

    Raises:
        ValueError: when ``path`` is the source model (inputs are never overwritten).
        IsADirectoryError: when ``path`` is a folder.
        NotADirectoryError: when a parent of ``path`` is a file.
        PermissionError: when that folder is not writable.
    """
    path = Path(path).absolute()
    if source_model and path.resolve() == Path(source_model).resolve():
        raise ValueError(f"output model {path} is the source model: write the new model to a new path.")
    if path.is_dir():
        raise IsADirectoryError(f"output model {path} is a folder; give a file path such as {path / 'model.pt'}.")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write output model {path}: {folder} is a file, not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write output model {path}: folder {folder} is not writable.")


def check_replaceable(path: str | os.PathLike, overwrite: bool | str = False) -> None:
    """Fail before any work when ``path`` already holds a model and ``overwrite`` is not set.

    An original model is what every unlearned model, record and certificate beside it derives from, so a
    second ``train`` in its folder must not replace it by accident.

    Raises:
        FileExistsError: when ``path`` is a file and ``overwrite`` is false.
    """
    if Path(path).is_file() and not as_flag(overwrite, "overwrite"):
        raise FileExistsError(
            f"{path} already holds a trained model: pass --overwrite true to replace it, "
            "or train into another --model_dir."
        )


def check_weights_fit(network: torch.nn.Module, path: str | os.PathLike) -> None:
    """Fail before any work when the model file ``path`` is missing or holds the weights of another network.

    PyTorch reports a mismatch as a list of every differing tensor; this names the first few in one line.
    The unlearn configs build the train data loader just before this check (which builds the network), in the
    order the trainer would: MONAI's DataLoader draws its seed from torch's generator, so the other order would
    change the shuffling and the random crops of a seeded run.

    Raises:
        FileNotFoundError: when the file does not exist.
        UntrustedCheckpointError: when the file holds more than tensors (it could run code when unpickled).
        ValueError: when it is not a PyTorch weights file, or its tensors do not match ``network``'s.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path} does not exist.")
    try:
        state = load_weights(path)
    except UntrustedCheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - torch raises many types for unreadable or unsafe files
        if not zipfile.is_zipfile(path):  # torch.save's format; torch's own error for a cut file is an OS errno
            reason = "it is not a PyTorch zip archive (truncated, or saved in another format)"
        else:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"model file {path} cannot be loaded as weights: {reason}") from error
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]  # a MONAI / ignite checkpoint dict
    if not isinstance(state, Mapping):
        raise ValueError(f"model file {path} holds a {type(state).__name__}, not a state_dict of network weights.")
    expected = getattr(network, "module", network).state_dict()
    missing = sorted(expected.keys() - state.keys())
    extra = sorted(state.keys() - expected.keys())
    resized = [
        f"{key}: file {list(state[key].shape)}, network {list(expected[key].shape)}"
        for key in expected.keys() & state.keys()
        if hasattr(state[key], "shape") and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    problems = {"tensors of another shape": sorted(resized), "missing tensors": missing, "unexpected tensors": extra}
    details = [f"{len(keys)} {kind} (e.g. {keys[0]})" for kind, keys in problems.items() if keys]
    if details:
        raise ValueError(
            f"model file {path} does not fit this bundle's network: {'; '.join(details)}. "
            "Was it trained with another bundle or other settings (num_classes, depth, modalities)?"
        )


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, Any]) -> str:
    """``torch.save`` a state_dict atomically, with the same bytes for the same tensors; returns their SHA-256.

    torch names the archive inside the file after the file it writes to; serialising to memory first keeps the
    temporary file's random name out of it, so equal weights give an equal SHA-256.
    """
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    content = buffer.getvalue()
    write_atomically(path, lambda target: Path(target).write_bytes(content))
    return hashlib.sha256(content).hexdigest()


class ModelSnapshots:
    """Save the network, with a record, at the end of chosen epochs of a longer run.

    The model of epoch ``e`` of an ``E``-epoch run is the model an ``e``-epoch run would have written when nothing in
    the run reads ``max_epochs`` (a learning-rate schedule over the run's length, l1-sparse's decay, RUM's phases do),
    so one run measures several unlearning budgets. The record is :class:`ModelWriter`'s for a run of ``e`` epochs
    (``seconds`` counted from the run's start) plus ``snapshot_of_epochs``; the model gets no certificate.

    Args:
        epochs: the epochs after which to save.
        path_template: the model file of each snapshot, with ``{epoch}`` in it (``.pt``).
        record: what to store about the run beside each snapshot, as for :class:`ModelWriter`.
        source_model: the model the run started from; it is never overwritten.
    """

    def __init__(
        self,
        epochs: Sequence[int],
        path_template: str,
        record: Mapping[str, Any],
        source_model: str | os.PathLike | None = None,
    ):
        if "{epoch}" not in path_template:
            raise ValueError(f"path_template must contain '{{epoch}}', got {path_template!r}.")
        self.epochs = sorted({int(epoch) for epoch in epochs})
        self.path_template = path_template
        self.record = dict(record)
        self.source_model = Path(source_model) if source_model else None
        for epoch in self.epochs:
            check_writable(self.path(epoch), source_model)
        self._started = 0.0

    def path(self, epoch: int) -> Path:
        """The model file of the snapshot after ``epoch``."""
        return Path(self.path_template.format(epoch=epoch))

    def attach(self, engine: Engine) -> None:
        """Start the clock when the run starts; save after each chosen epoch."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _start(self, engine: Engine) -> None:
        self._started = time.perf_counter()

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if epoch not in self.epochs or epoch >= engine.state.max_epochs:
            return
        path = self.path(epoch)
        network = getattr(engine.network, "module", engine.network)
        save_weights(path, network.state_dict())
        # A resumed run carries the seconds its interrupted runs spent (set by the run checkpointer when it restores).
        seconds = time.perf_counter() - self._started + float(getattr(engine.state, SECONDS_BEFORE_RESUME, 0.0) or 0.0)
        record = {
            **self.record,
            **{key: epoch for key in ("max_epochs", "unlearn_epochs") if key in self.record},
            "seconds": seconds,
            "epochs": epoch,
            "snapshot_of_epochs": engine.state.max_epochs,
            "samples_per_second": samples_seen(engine) / max(seconds, 1e-9),
            "model_sha256": file_sha256(path),
        }
        if self.source_model:
            record["source_model_sha256"] = file_sha256(self.source_model)
        write_json(record_path(path), record)


class ModelWriter:
    """Save the trained network's ``state_dict`` and its record when the trainer completes.

    The record holds ``record`` (workflow, strategy, request hash, ...) plus ``seconds``,
    ``samples_per_second``, ``epochs``, ``model_sha256`` and, when given, ``source_model_sha256``.

    Args:
        path: the model file to write (``.pt``).
        record: what to store about the run beside the model.
        source_model: the model this run started from; it is never overwritten.

    Raises:
        ValueError: when ``path`` is the source model.
        OSError: when ``path`` cannot be written (see :func:`check_writable`).
    """

    def __init__(
        self, path: str | os.PathLike, record: Mapping[str, Any], source_model: str | os.PathLike | None = None
    ):
        check_writable(path, source_model)
        self.path = Path(path)
        self.source_model = Path(source_model) if source_model else None
        self.record = dict(record)

    def attach(self, engine: Engine) -> None:
        """Write once, when training completes."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        network = getattr(engine.network, "module", engine.network)
        save_weights(self.path, network.state_dict())
        seconds = engine_seconds(engine)
        record = {
            **self.record,
            "seconds": seconds,
            "epochs": engine.state.epoch,
            "samples_per_second": samples_seen(engine) / max(seconds, 1e-9),
            "model_sha256": file_sha256(self.path),
        }
        if self.source_model:
            record["source_model_sha256"] = file_sha256(self.source_model)
        write_json(record_path(self.path), record)
