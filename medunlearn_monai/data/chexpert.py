"""Reader for the CheXpert chest X-ray layout (``CheXpert-v1.0`` or ``CheXpert-v1.0-small``), yielding MONAI data dicts.

The data set ships one CSV per split next to the image folders::

    <root>/train.csv
    <root>/valid.csv
    <root>/train/patient00001/study1/view1_frontal.jpg   (and view2_lateral.jpg, ...)

Each CSV row is one image: ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14 observations of
:data:`OBSERVATIONS`, each ``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or blank (not mentioned).
``Path`` is relative to the parent of ``<root>`` (``CheXpert-v1.0-small/train/patient00001/...``). The patient is the
unit of forgetting, so every item carries its ``subject`` (patient) ID.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
COMPETITION_TASKS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
REQUIRED_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
UNCERTAINTY_POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore")
SPLITS: tuple[str, ...] = ("train", "valid")

# An optional leading dataset folder, then <split>/patientNNNNN/studyN/<file>; the rest is resolved against root.
_PATH_PATTERN = re.compile(r"^(?:[^/]+/)?(?P<relative>[^/]+/(?P<subject>patient\d+)/(?P<study>study\d+)/[^/]+)$")
_VIEWS = ("Frontal", "Lateral")
_SEXES = ("Female", "Male", "Unknown")
# Value of an uncertain (-1) label and its mask, per policy (U-Ones, U-Zeros, U-Ignore of the CheXpert paper).
_UNCERTAIN: dict[str, tuple[float, float]] = {"ones": (1.0, 1.0), "zeros": (0.0, 1.0), "ignore": (0.0, 0.0)}
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class CheXpertFormatError(ValueError):
    """Raised when files do not follow the CheXpert layout; the message names the file (and the CSV row)."""


def ignored_as_nan(item: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``item`` whose ignored labels (``label_mask`` 0) are NaN, for masked losses and metrics.

    Used as a transform: with the "ones" and "zeros" policies every mask is 1 and the label is unchanged.
    """
    mask = np.asarray(item["label_mask"])
    return {**item, "label": np.where(mask > 0, np.asarray(item["label"], np.float32), np.float32("nan"))}


def check_observations(observations: str | Iterable[str]) -> tuple[str, ...]:
    """Validate a choice of observations and return it as a tuple, in the order given (= label order).

    Raises:
        ValueError: If the choice is empty, repeats a name or holds a name not in :data:`OBSERVATIONS`.
    """
    names = (observations,) if isinstance(observations, str) else tuple(observations)
    unknown = [name for name in names if name not in OBSERVATIONS]
    if unknown:
        raise ValueError(f"Unknown CheXpert observation {unknown[0]!r}; expected names from {OBSERVATIONS}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"Observations must be a non-empty choice of distinct names, got {names}")
    return names


def load_chexpert_items(
    root: str | os.PathLike,
    split: str = "train",
    observations: str | Iterable[str] = COMPETITION_TASKS,
    uncertainty: str = "ones",
    frontal_only: bool = True,
) -> list[dict[str, Any]]:
    """Read ``<root>/<split>.csv`` into one MONAI item per image.

    Blank labels count as negative (not mentioned in the report); uncertain (``-1``) labels follow ``uncertainty``:
    ``"ones"`` makes them positive, ``"zeros"`` negative, ``"ignore"`` sets their ``label_mask`` entry to 0.

    Args:
        root: The ``CheXpert-v1.0`` / ``CheXpert-v1.0-small`` folder.
        split: ``"train"`` or ``"valid"``.
        observations: Label columns, in label order; a single name gives a single binary task.
        uncertainty: One of :data:`UNCERTAINTY_POLICIES`.
        frontal_only: Keep only rows whose ``Frontal/Lateral`` is ``"Frontal"``; other rows are not checked further.

    Returns:
        In CSV order, ``{"image": absolute path, "label": float32 (len(observations),), "label_mask": float32 of the
        same shape, "subject": "patient00001", "study": "study1", "sex": "Female" / "Male" / "Unknown", "age": int}``.

    Raises:
        FileNotFoundError: If the CSV does not exist.
        ValueError: If ``split``, ``observations`` or ``uncertainty`` is not a valid choice.
        CheXpertFormatError: If a column is missing, or a row (numbered as a spreadsheet shows it, header = row 1) has
            a malformed path, view, sex, age or label value, or names an image that does not exist.
    """
    names = check_observations(observations)
    if split not in SPLITS:
        raise ValueError(f"Unknown CheXpert split {split!r}; expected one of {SPLITS}")
    if uncertainty not in _UNCERTAIN:
        raise ValueError(f"Unknown uncertainty policy {uncertainty!r}; expected one of {UNCERTAINTY_POLICIES}")
    base = Path(root).absolute()
    csv_path = base / f"{split}.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"CheXpert CSV not found: {csv_path}")
    items = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            columns = _column_indices(csv_path, next(reader, []), names)
            # Rows are numbered as a spreadsheet shows them: the header is row 1.
            for number, row in enumerate(reader, start=2):
                item = _row_item(csv_path, number, row, columns, base, uncertainty, frontal_only) if row else None
                if item is not None:
                    items.append(item)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CheXpertFormatError(f"{csv_path}: not a readable CSV file ({exc})") from exc
    return items


def validate_images(items: Iterable[dict[str, Any]]) -> None:
    """Open and fully decode every image, so that a truncated or corrupt file fails here rather than in training.

    Raises:
        CheXpertFormatError: If an image cannot be decoded; the message names the file.
    """
    for item in items:
        try:
            with Image.open(item["image"]) as image:
                image.load()
        except _IMAGE_ERRORS as exc:
            raise CheXpertFormatError(f"{item['image']}: not a readable image ({type(exc).__name__}: {exc})") from exc


def patient_split(
    items: Sequence[dict[str, Any]], val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Split items into (train, val, test) by patient, so that no patient's images are in two splits.

    The sorted patient IDs are shuffled with ``seed``; each split keeps the items' order. The assignment depends only
    on the set of patients and the seed.

    Raises:
        ValueError: If a fraction is not in (0, 1), they sum to 1 or more, or there are fewer than 3 patients.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"Fractions must be in (0, 1) and sum below 1, got val {val_fraction}, test {test_fraction}")
    subjects = sorted({item["subject"] for item in items})
    n_subjects = len(subjects)
    if n_subjects < 3:
        raise ValueError(f"A train/val/test split needs at least 3 patients, got {n_subjects}")
    order = [subjects[index] for index in np.random.default_rng(seed).permutation(n_subjects)]
    # Every split keeps at least one patient, the rounding notwithstanding.
    n_test = min(max(1, round(test_fraction * n_subjects)), n_subjects - 2)
    n_val = min(max(1, round(val_fraction * n_subjects)), n_subjects - 1 - n_test)
    test, val = set(order[:n_test]), set(order[n_test : n_test + n_val])
    return (
        [item for item in items if item["subject"] not in test and item["subject"] not in val],
        [item for item in items if item["subject"] in val],
        [item for item in items if item["subject"] in test],
    )


def subjects_with(items: Iterable[dict[str, Any]], **attributes: Any) -> list[str]:
    """Return the sorted unique subject IDs with an item matching every attribute, for attribute-based forgetting.

    Args:
        items: Items from :func:`load_chexpert_items`.
        **attributes: Item key and wanted value (``sex="Female"``), or a predicate on the value
            (``age=lambda age: age >= 80``).

    Raises:
        ValueError: If an item lacks one of the attribute keys.
    """
    subjects = set()
    for item in items:
        missing = [key for key in attributes if key not in item]
        if missing:
            raise ValueError(f"Unknown item attribute(s) {missing}; items have {sorted(item)}")
        if all(wanted(item[key]) if callable(wanted) else item[key] == wanted for key, wanted in attributes.items()):
            subjects.add(item["subject"])
    return sorted(subjects)


def _column_indices(csv_path: Path, header: list[str], observations: Sequence[str]) -> dict[str, int]:
    """Map the required and requested columns to their positions in the header."""
    header = [name.strip() for name in header]
    missing = [name for name in (*REQUIRED_COLUMNS, *observations) if name not in header]
    if missing:
        raise CheXpertFormatError(f"{csv_path}: row 1: missing column(s) {missing}; header has {header}")
    return {name: header.index(name) for name in (*REQUIRED_COLUMNS, *observations)}


def _row_item(
    csv_path: Path,
    number: int,
    row: list[str],
    columns: dict[str, int],
    base: Path,
    uncertainty: str,
    frontal_only: bool,
) -> dict[str, Any] | None:
    """Parse one CSV row into an item, or ``None`` for a lateral view that ``frontal_only`` drops."""
    where = f"{csv_path}: row {number}"
    if len(row) <= max(columns.values()):
        raise CheXpertFormatError(f"{where}: {len(row)} field(s), too few for the header")
    view = row[columns["Frontal/Lateral"]].strip()
    if view not in _VIEWS:
        raise CheXpertFormatError(f"{where}: Frontal/Lateral is {view!r}; expected one of {_VIEWS}")
    if frontal_only and view != "Frontal":
        return None
    match = _PATH_PATTERN.match(row[columns["Path"]].strip().replace("\\", "/"))
    if match is None:
        raise CheXpertFormatError(
            f"{where}: Path {row[columns['Path']]!r} does not match [<dataset>/]<split>/patientNNNNN/studyN/<file>"
        )
    image = os.path.join(base, match["relative"])
    # os.path.isfile rather than Path.is_file: the real train.csv has 224k rows.
    if not os.path.isfile(image):
        raise CheXpertFormatError(f"{where}: image {image} not found")
    sex = row[columns["Sex"]].strip() or "Unknown"
    if sex not in _SEXES:
        raise CheXpertFormatError(f"{where}: Sex is {sex!r}; expected one of {_SEXES}")
    observations = list(columns)[len(REQUIRED_COLUMNS) :]
    label, mask = _labels(where, [row[columns[name]] for name in observations], observations, uncertainty)
    return {
        "image": image,
        "label": label,
        "label_mask": mask,
        "subject": match["subject"],
        "study": match["study"],
        "sex": sex,
        "age": _age(where, row[columns["Age"]]),
    }


def _labels(where: str, values: list[str], names: list[str], uncertainty: str) -> tuple[np.ndarray, np.ndarray]:
    """Turn label fields into (label, mask) float32 vectors; blank is negative, -1 follows the uncertainty policy."""
    label, mask = np.zeros(len(values), np.float32), np.ones(len(values), np.float32)
    for index, (text, name) in enumerate(zip(values, names, strict=True)):
        text = text.strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            value = None
        if value == 1.0:
            label[index] = 1.0
        elif value == -1.0:
            label[index], mask[index] = _UNCERTAIN[uncertainty]
        elif value != 0.0:
            raise CheXpertFormatError(f"{where}: {name} is {text!r}; expected 1.0, 0.0, -1.0 or blank")
    return label, mask


def _age(where: str, text: str) -> int:
    """Parse an age field (``"68"``, or ``"68.0"`` as pandas writes it) into a non-negative integer."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0 and value.is_integer()):
        raise CheXpertFormatError(f"{where}: Age is {text!r}; expected a non-negative whole number")
    return int(value)
