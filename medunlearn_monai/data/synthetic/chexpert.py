"""Synthetic CheXpert-like chest X-rays written in exactly the ``CheXpert-v1.0-small`` layout (CSV + JPEG).

Each patient has a stable appearance (body width, rib spacing and curvature, heart position, a smooth tissue pattern),
a sex with slight anatomical differences (breast shadows, broader shoulders) and an age. Each study draws its own
findings, and the competition findings are drawn as distinct cues: Cardiomegaly widens the heart, Pleural Effusion
fills a lung base, Edema hazes both lungs, Consolidation adds a bright patch, Atelectasis flattens a lung's apex.
An uncertain (-1) finding is drawn at half strength. Like the real ``valid.csv``, the validation labels are certain.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image
from scipy import ndimage

from medunlearn_monai.data.chexpert import OBSERVATIONS, REQUIRED_COLUMNS

# Prevalence of a positive finding per drawn observation; the others are derived from them (see _study_findings).
_PREVALENCE: dict[str, float] = {
    "Cardiomegaly": 0.3,
    "Edema": 0.3,
    "Consolidation": 0.3,
    "Atelectasis": 0.3,
    "Pleural Effusion": 0.3,
    "Lung Lesion": 0.05,
    "Pneumonia": 0.05,
    "Pneumothorax": 0.05,
    "Pleural Other": 0.02,
    "Fracture": 0.04,
    "Support Devices": 0.3,
}
_UNCERTAIN_FRACTION = 0.07
_BLANK_FRACTION = 0.5  # of the negative labels: "not mentioned" rather than "0.0"
_LATERAL_FRACTION = 0.2
_AGE_RANGE = (18, 90)
_JPEG_QUALITY = 90


@dataclass(frozen=True)
class _Patient:
    """The stable look of one patient."""

    sex: str
    age: int
    body_width: float
    rib_cycles: float
    rib_phase: float
    rib_curve: float
    heart_shift: float
    tissue: np.ndarray  # smooth (size, size) field in [-1, 1]


def write_synthetic_chexpert(
    root: str | os.PathLike,
    n_patients: int = 60,
    studies_per_patient: tuple[int, int] = (1, 3),
    size: int = 64,
    seed: int = 0,
    n_valid_patients: int = 10,
) -> Path:
    """Write a synthetic data set in the CheXpert layout; ``root`` plays the role of ``CheXpert-v1.0-small``.

    Training patients are ``patient00001..``, validation patients follow them. Images are written first (each to a
    temporary file renamed into place), the CSVs last, so an interrupted run never leaves a CSV naming missing images.

    Args:
        root: Destination folder; ``train.csv``, ``valid.csv``, ``train/`` and ``valid/`` are created inside it.
        n_patients: Number of training patients.
        studies_per_patient: Smallest and largest number of studies of a patient (inclusive).
        size: Side length of the square grayscale JPEGs.
        seed: Patient ``i`` draws from its own generator seeded with ``(seed, i)``; the same seed writes the same files.
        n_valid_patients: Number of validation patients.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    base = Path(root)
    tables = {"train": range(1, n_patients + 1), "valid": range(n_patients + 1, n_patients + n_valid_patients + 1)}
    rows = {split: [] for split in tables}
    for split, numbers in tables.items():
        for number in numbers:
            rows[split] += _write_patient(base, split, number, studies_per_patient, size, seed)
    for split, split_rows in rows.items():
        _write_csv(base / f"{split}.csv", split_rows)
    return base


def _write_patient(
    base: Path, split: str, number: int, studies: tuple[int, int], size: int, seed: int
) -> list[list[str]]:
    """Write the images of one patient and return their CSV rows."""
    rng = np.random.default_rng((seed, number))
    patient = _Patient(
        sex=str(rng.choice(["Female", "Male"])),
        age=int(rng.integers(_AGE_RANGE[0], _AGE_RANGE[1] + 1)),
        body_width=rng.uniform(0.75, 0.92),
        rib_cycles=rng.uniform(4.0, 7.0),
        rib_phase=rng.uniform(0.0, 2.0 * np.pi),
        rib_curve=rng.uniform(0.4, 1.2),
        heart_shift=rng.uniform(0.05, 0.15),
        tissue=np.clip(ndimage.zoom(rng.normal(0.0, 1.0, (6, 6)), size / 6, order=3)[:size, :size] / 2, -1, 1),
    )
    rows = []
    for study in range(1, int(rng.integers(studies[0], studies[1] + 1)) + 1):
        strength, labels = _study_findings(rng, certain=split == "valid")
        views = [("view1_frontal.jpg", "Frontal", str(rng.choice(["AP", "PA"])))]
        if rng.random() < _LATERAL_FRACTION:
            views.append(("view2_lateral.jpg", "Lateral", ""))
        for name, view, projection in views:
            relative = f"{split}/patient{number:05d}/study{study}/{name}"
            lateral = view == "Lateral"
            _save_jpeg(base / relative, _draw(patient, strength, rng, size, lateral))
            rows.append(
                [f"{base.absolute().name}/{relative}", patient.sex, str(patient.age), view, projection, *labels]
            )
    return rows


def _study_findings(rng: np.random.Generator, certain: bool) -> tuple[dict[str, float], list[str]]:
    """Draw the findings of one study: cue strength per observation (1, 0.5 uncertain, 0) and the label fields."""
    strength = {}
    for name, prevalence in _PREVALENCE.items():
        draw = rng.random()
        uncertain = 0.0 if certain else _UNCERTAIN_FRACTION
        strength[name] = 1.0 if draw < prevalence else 0.5 if draw < prevalence + uncertain else 0.0
    # CheXpert's labeller derives the parent observations from their children.
    strength["Enlarged Cardiomediastinum"] = strength["Cardiomegaly"]
    opacities = ("Edema", "Consolidation", "Atelectasis", "Pneumonia", "Lung Lesion")
    strength["Lung Opacity"] = max(strength[name] for name in opacities)
    normal = all(value == 0.0 for name, value in strength.items() if name != "Support Devices")
    fields = []
    for name in OBSERVATIONS:
        if name == "No Finding":
            fields.append("1.0" if normal else "0.0" if certain else "")
        elif strength[name] > 0:
            fields.append("1.0" if strength[name] == 1.0 else "-1.0")
        else:
            fields.append("" if not certain and rng.random() < _BLANK_FRACTION else "0.0")
    return strength, fields


def _draw(
    patient: _Patient, strength: dict[str, float], rng: np.random.Generator, size: int, lateral: bool
) -> np.ndarray:
    """Draw one radiograph in [0, 1]; y runs from -1 (top) to 1 (bottom), x from -1 (image left) to 1."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j] + rng.normal(0.0, 0.02, (2, 1, 1))
    width = patient.body_width + (0.04 if patient.sex == "Male" else 0.0)
    image = np.full((size, size), 0.05) + 0.45 * _ellipse(x, y, 0.0, 0.2, width, 1.1)
    image += 0.15 * _ellipse(x, y, 0.0, -0.8, width + (0.12 if patient.sex == "Male" else 0.05), 0.2)  # shoulders
    image += 0.04 * patient.tissue
    # Lungs: two fields on a frontal view, one on a lateral view; Atelectasis pulls a lung's apex down.
    centres = [0.0] if lateral else [-0.42 * width, 0.42 * width]
    collapsed = rng.integers(len(centres))
    lungs = np.zeros_like(image)
    for index, cx in enumerate(centres):
        drop = 0.35 * strength["Atelectasis"] if index == collapsed else 0.0
        lungs = np.maximum(
            lungs, _ellipse(x, y, cx, drop * 0.55, (0.55 if lateral else 0.3) * width, 0.55 - drop * 0.55)
        )
    ribs = np.clip(np.cos(2 * np.pi * patient.rib_cycles * (y + patient.rib_curve * x**2) + patient.rib_phase), 0, 1)
    image += lungs * (0.08 * ribs - 0.3)
    haze = ndimage.gaussian_filter(rng.random((size, size)), 1.0)
    image += lungs * strength["Edema"] * (0.1 + 0.2 * haze)
    # The heart: central on a frontal view, anterior (image left) on a lateral one; Cardiomegaly widens it.
    heart_x = -0.35 if lateral else patient.heart_shift
    heart = _ellipse(x, y, heart_x, 0.25, (0.2 + 0.16 * strength["Cardiomegaly"]) * width, 0.24)
    image = image * (1 - heart) + 0.65 * heart
    if patient.sex == "Female" and not lateral:
        image += 0.06 * (_ellipse(x, y, -0.45 * width, 0.6, 0.3, 0.22) + _ellipse(x, y, 0.45 * width, 0.6, 0.3, 0.22))
    fluid = lungs * (y > 0.3) * strength["Pleural Effusion"]
    image = image * (1 - fluid) + 0.6 * fluid
    cx, cy = rng.choice(centres) + rng.uniform(-0.1, 0.1), rng.uniform(-0.2, 0.3)
    image += lungs * 0.3 * strength["Consolidation"] * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.12**2))
    cx, cy = rng.choice(centres) + rng.uniform(-0.1, 0.1), rng.uniform(-0.4, 0.2)
    image += 0.3 * strength["Lung Lesion"] * _ellipse(x, y, cx, cy, 0.06, 0.06)
    image += 0.35 * strength["Support Devices"] * (np.abs(x - 0.05 - 0.1 * y) < 1.5 / size) * (y < 0.2)  # a tube
    image = image * rng.uniform(0.95, 1.05) + rng.normal(0.0, 0.02, image.shape)
    return np.clip(image, 0.0, 1.0)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Soft-edged ellipse mask in [0, 1]."""
    radius = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return 1.0 / (1.0 + np.exp(np.clip((radius - 1.0) / 0.05, -50, 50)))


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    """Write a [0, 1] image as an 8-bit grayscale JPEG through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = Image.fromarray(np.round(image * 255).astype(np.uint8))
    _atomic_write(path, lambda handle: pixels.save(handle, format="JPEG", quality=_JPEG_QUALITY))


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    """Write a CheXpert CSV (header, then one row per image) through a temporary file."""

    def write(handle: IO[Any]) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*REQUIRED_COLUMNS, *OBSERVATIONS])
        writer.writerows(rows)

    _atomic_write(path, write, text=True)


def _atomic_write(path: Path, write: Callable[[IO[Any]], None], text: bool = False) -> None:
    """Call ``write`` on a temporary file next to ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", newline="") if text else os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp_name, 0o644)  # mkstemp creates owner-only files; the data set is meant to be shared
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
