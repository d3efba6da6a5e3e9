"""The JSON files beside a model file: their names, the keys they share, and reading and writing them atomically.

For a model file ``models/x.pt``:

- ``models/x.json``: its record, how it was made (:func:`record_path`, written by
  :class:`medunlearn_monai.model_io.ModelWriter`);
- ``models/x.eval.json``: its evaluation (:func:`evaluation_path`);
- ``models/x.items.json``: the evaluation's per-item scores (:func:`item_scores_path`);
- ``models/x.subjects.json``: a segmentation evaluation's per-subject scores (:func:`subject_scores_path`);
- ``models/x.certificate.json``: its erasure certificate (:func:`certificate_path`).

Records, evaluations and certificates name the forget request they belong to by its salted hash under
:data:`REQUEST_KEY`. This module is the package's bottom layer: it imports no other module of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REQUEST_KEY = "forget_request_sha256"  # the salted hash of the request a record, evaluation or certificate is for
REFERENCE_KEY = "reference_model"  # the file the gap to retrain was measured against


def record_path(model_path: str | os.PathLike) -> Path:
    """The JSON record that sits beside a model file: ``models/x.pt`` -> ``models/x.json``."""
    return Path(model_path).with_suffix(".json")


def evaluation_path(model_path: str | os.PathLike) -> Path:
    """Where the evaluation of a model file is kept: ``models/x.pt`` -> ``models/x.eval.json``."""
    return Path(model_path).with_suffix(".eval.json")


def item_scores_path(model_path: str | os.PathLike) -> Path:
    """Where the per-item scores of a model's evaluation are kept: ``models/x.pt`` -> ``models/x.items.json``."""
    return Path(model_path).with_suffix(".items.json")


def subject_scores_path(model_path: str | os.PathLike) -> Path:
    """Where a segmentation evaluation keeps its per-subject scores: ``models/x.pt`` -> ``models/x.subjects.json``."""
    return Path(model_path).with_suffix(".subjects.json")


def certificate_path(model_path: str | os.PathLike) -> Path:
    """Where the erasure certificate of a model file sits: ``models/x.pt`` -> ``models/x.certificate.json``."""
    return Path(model_path).with_suffix(".certificate.json")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
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
