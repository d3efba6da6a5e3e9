"""Model files: written atomically beside a JSON record of how they were made; inputs never overwritten."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medunlearn_monai.checkpoints import as_flag
from medunlearn_monai.safe_loading import UntrustedCheckpointError, load_weights
from medunlearn_monai.tracking import engine_seconds, samples_seen


def record_path(model_path: str | os.PathLike) -> Path:
    """The JSON record that sits beside a model file: ``models/x.pt`` -> ``models/x.json``."""
    return Path(model_path).with_suffix(".json")


def evaluation_path(model_path: str | os.PathLike) -> Path:
    """Where the evaluation of a model file is kept: ``models/x.pt`` -> ``models/x.eval.json``."""
    return Path(model_path).with_suffix(".eval.json")


def item_scores_path(model_path: str | os.PathLike) -> Path:
    """Where the per-item scores of a model's evaluation are kept: ``models/x.pt`` -> ``models/x.items.json``."""
    return Path(model_path).with_suffix(".items.json")


def certificate_path(model_path: str | os.PathLike) -> Path:
    """Where the erasure certificate of a model file sits: ``models/x.pt`` -> ``models/x.certificate.json``."""
    return Path(model_path).with_suffix(".certificate.json")


def read_item_scores(model_path: str | os.PathLike) -> dict[str, Any]:
    """The per-item scores written by the evaluation of ``model_path``.

    Content: ``{"forget_request_sha256": str, "splits": {split: {"subject_sha256": [...], "loss": [...],
    "confidence": [...]}}}``, one entry per item in the evaluation loader's order.

    Raises:
        FileNotFoundError: when the model has not been evaluated yet.
    """
    path = item_scores_path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"no per-item scores at {path}: evaluate {model_path} first.")
    return read_json(path)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def write_atomically(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(temporary_path)`` then rename onto ``path``, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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


def write_json(path: str | os.PathLike, content: Mapping[str, Any]) -> None:
    """Write ``content`` as indented JSON, atomically."""
    write_atomically(path, lambda target: Path(target).write_text(json.dumps(content, indent=2, sort_keys=True)))


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON record written by :func:`write_json`."""
    return json.loads(Path(path).read_text())


def read_record(model_path: str | os.PathLike) -> dict[str, Any]:
    """The record written beside ``model_path``, or an empty dict for a model made elsewhere.

    Raises:
        FileNotFoundError: when the model file itself does not exist.
    """
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model file {model_path} does not exist.")
    path = record_path(model_path)
    return read_json(path) if path.is_file() else {}


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
