"""Synthetic CheXpert-like chest X-rays written in exactly the ``CheXpert-v1.0-small`` layout (CSV + JPEG).

Each patient has a stable appearance (body width, rib spacing and curvature, heart position, a smooth tissue pattern),
a sex with slight anatomical differences (breast shadows, broader shoulders) and an age. Each study draws its own
findings, and the competition findings are drawn as distinct cues: Cardiomegaly widens the heart, Pleural Effusion
fills a lung base, Edema hazes both lungs, Consolidation adds a bright patch, Atelectasis flattens a lung's apex.
An uncertain (-1) finding is drawn at half strength. Like the real ``valid.csv``, the validation labels are certain.

The difficulty is set by the writer's keyword arguments: ``cue_strength`` scales every finding's cue, ``noise_std``
adds pixel noise, ``label_noise`` flips training labels (the images keep the true findings) and
``female_prevalence`` / ``male_prevalence`` set how often each competition finding occurs in either sex.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image
from scipy import ndimage

from medunlearn_monai.data.chexpert import COMPETITION_TASKS, OBSERVATIONS, REQUIRED_COLUMNS

# Prevalence of the drawn observations besides the competition findings (whose prevalence depends on sex); the
# remaining observations are derived from the drawn ones (see _study_findings).
_OTHER_PREVALENCE: dict[str, float] = {
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
# Default difficulty: at the benchmark's size (240 patients, 48 px, 20 epochs) the bundle's original model reached a
# test AUC of 0.88 for generator seeds 0 and 1 (1.00 with cue_strength 1, noise_std 0.02 and no label noise).
CUE_STRENGTH = 0.25
NOISE_STD = 0.05
LABEL_NOISE = 0.05
FEMALE_PREVALENCE = 0.35
MALE_PREVALENCE = 0.25
_MAX_CUE_STRENGTH = 2.0
_MAX_NOISE_STD = 0.5
_MAX_PREVALENCE = 1.0 - _UNCERTAIN_FRACTION


@dataclass(frozen=True)
class _Difficulty:
    """How hard the findings are to read from the images and labels (see :func:`write_synthetic_chexpert`)."""

    cue_strength: float
    noise_std: float
    label_noise: float
    female_prevalence: float
    male_prevalence: float

    def __post_init__(self) -> None:
        _check_range("cue_strength", self.cue_strength, 0.0, _MAX_CUE_STRENGTH)
        _check_range("noise_std", self.noise_std, 0.0, _MAX_NOISE_STD)
        _check_range("label_noise", self.label_noise, 0.0, 0.5, closed=False)
        _check_range("female_prevalence", self.female_prevalence, 0.0, _MAX_PREVALENCE)
        _check_range("male_prevalence", self.male_prevalence, 0.0, _MAX_PREVALENCE)

    def prevalence(self, sex: str) -> dict[str, float]:
        """Prevalence of a positive finding per drawn observation for a patient of this sex."""
        rate = self.female_prevalence if sex == "Female" else self.male_prevalence
        return {**dict.fromkeys(COMPETITION_TASKS, rate), **_OTHER_PREVALENCE}


def _check_range(name: str, value: float, low: float, high: float, closed: bool = True) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` lies in [low, high] (or [low, high) when not ``closed``)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and low <= value and (value <= high if closed else value < high)):
        interval = f"[{low}, {high}{']' if closed else ')'}"
        raise ValueError(f"{name} must be a number in {interval}; got {value!r}.")


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
    *,
    cue_strength: float = CUE_STRENGTH,
    noise_std: float = NOISE_STD,
    label_noise: float = LABEL_NOISE,
    female_prevalence: float = FEMALE_PREVALENCE,
    male_prevalence: float = MALE_PREVALENCE,
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
        cue_strength: Scale of every finding's cue in [0, 2]: 0 hides the findings, 1 draws them fully.
        noise_std: Standard deviation of the pixel noise in [0, 0.5] (intensities span [0, 1]).
        label_noise: Probability in [0, 0.5) that a certain training label of a drawn observation is flipped; the
            image keeps the true finding. Flips come from their own generator, so only the labels change with it.
            Validation labels stay exact.
        female_prevalence: Probability in [0, 0.93] that a woman's study shows each competition finding.
        male_prevalence: The same for a man's study.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: A difficulty setting outside its range.
    """
    difficulty = _Difficulty(cue_strength, noise_std, label_noise, female_prevalence, male_prevalence)
    base = Path(root)
    tables = {"train": range(1, n_patients + 1), "valid": range(n_patients + 1, n_patients + n_valid_patients + 1)}
    rows = {split: [] for split in tables}
    for split, numbers in tables.items():
        for number in numbers:
            rows[split] += _write_patient(base, split, number, studies_per_patient, size, seed, difficulty)
    for split, split_rows in rows.items():
        _write_csv(base / f"{split}.csv", split_rows)
    return base


def _write_patient(
    base: Path, split: str, number: int, studies: tuple[int, int], size: int, seed: int, difficulty: _Difficulty
) -> list[list[str]]:
    """Write the images of one patient and return their CSV rows."""
    rng, flips = np.random.default_rng((seed, number)), np.random.default_rng((seed, number, 1))
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
    certain = split == "valid"
    label_noise = 0.0 if certain else difficulty.label_noise
    rows = []
    for study in range(1, int(rng.integers(studies[0], studies[1] + 1)) + 1):
        strength = _study_strength(rng, difficulty.prevalence(patient.sex), certain)
        labels = _label_fields(_flip_labels(strength, flips, label_noise), rng, certain)
        cues = {name: value * difficulty.cue_strength for name, value in strength.items()}
        views = [("view1_frontal.jpg", "Frontal", str(rng.choice(["AP", "PA"])))]
        if rng.random() < _LATERAL_FRACTION:
            views.append(("view2_lateral.jpg", "Lateral", ""))
        for name, view, projection in views:
            relative = f"{split}/patient{number:05d}/study{study}/{name}"
            image = _draw(patient, cues, rng, size, view == "Lateral", difficulty.noise_std)
            _save_jpeg(base / relative, image)
            rows.append(
                [f"{base.absolute().name}/{relative}", patient.sex, str(patient.age), view, projection, *labels]
            )
    return rows


def _study_strength(rng: np.random.Generator, prevalence: Mapping[str, float], certain: bool) -> dict[str, float]:
    """Draw the findings of one study: strength per drawn observation (1 positive, 0.5 uncertain, 0 negative)."""
    uncertain = 0.0 if certain else _UNCERTAIN_FRACTION
    strength = {}
    for name, rate in prevalence.items():
        draw = rng.random()
        strength[name] = 1.0 if draw < rate else 0.5 if draw < rate + uncertain else 0.0
    return strength


def _flip_labels(strength: Mapping[str, float], flips: np.random.Generator, rate: float) -> dict[str, float]:
    """Swap positive and negative of each certain finding with probability ``rate``; uncertain ones stay."""
    flipped = flips.random(len(strength)) < rate  # drawn at every rate: the rate changes only which labels flip
    return {
        name: 1.0 - value if flip and value != 0.5 else value
        for (name, value), flip in zip(strength.items(), flipped, strict=True)
    }


def _label_fields(strength: Mapping[str, float], rng: np.random.Generator, certain: bool) -> list[str]:
    """The CSV label fields of a study's (labelled) findings, parents derived as CheXpert's labeller does."""
    strength = dict(strength)
    strength["Enlarged Cardiomediastinum"] = strength["Cardiomegaly"]
    opacities = ("Edema", "Consolidation", "Atelectasis", "Pneumonia", "Lung Lesion")
    strength["Lung Opacity"] = max(strength[name] for name in opacities)
    normal = all(value == 0.0 for name, value in strength.items() if name != "Support Devices")
    blank = rng.random(len(OBSERVATIONS)) < _BLANK_FRACTION  # drawn for every study, so flips leave the images alone
    fields = []
    for name, unmentioned in zip(OBSERVATIONS, blank, strict=True):
        if name == "No Finding":
            fields.append("1.0" if normal else "0.0" if certain else "")
        elif strength[name] > 0:
            fields.append("1.0" if strength[name] == 1.0 else "-1.0")
        else:
            fields.append("" if not certain and unmentioned else "0.0")
    return fields


def _draw(
    patient: _Patient, strength: dict[str, float], rng: np.random.Generator, size: int, lateral: bool, noise_std: float
) -> np.ndarray:
    """Draw one radiograph in [0, 1] with cues scaled by ``strength``; y runs from -1 (top) to 1, x from -1 to 1."""
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
    fluid = np.clip(lungs * (y > 0.3) * strength["Pleural Effusion"], 0.0, 1.0)
    image = image * (1 - fluid) + 0.6 * fluid
    cx, cy = rng.choice(centres) + rng.uniform(-0.1, 0.1), rng.uniform(-0.2, 0.3)
    image += lungs * 0.3 * strength["Consolidation"] * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.12**2))
    cx, cy = rng.choice(centres) + rng.uniform(-0.1, 0.1), rng.uniform(-0.4, 0.2)
    image += 0.3 * strength["Lung Lesion"] * _ellipse(x, y, cx, cy, 0.06, 0.06)
    image += 0.35 * strength["Support Devices"] * (np.abs(x - 0.05 - 0.1 * y) < 1.5 / size) * (y < 0.2)  # a tube
    image = image * rng.uniform(0.95, 1.05) + rng.normal(0.0, noise_std, image.shape)
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
