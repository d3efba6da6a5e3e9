"""Synthetic TissueMNIST-like data set written in the MedMNIST ``.npz`` format.

Each of the 8 classes is a sinusoidal grating texture (4 orientations x 2 spatial frequencies) with random
orientation/frequency jitter, phase, contrast and brightness. Half of the images are "easy" (their own class dominates,
mild noise); the other half are "hard": mixed with another class at a weight up to 0.5, heavily noised, and a quarter
of them carry a resampled label, like ambiguous, mislabelled tissue crops. A ResNet fits the hard training images by
memorising them, which gives the train/test generalisation gap that machine-unlearning metrics need.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

N_CLASSES = 8
_ORIENTATIONS_DEG = (0.0, 45.0, 90.0, 135.0)
_CYCLES_PER_IMAGE = (3.0, 5.5)
_ORIENTATION_JITTER_DEG = 12.0
_FREQUENCY_JITTER = 0.12
_HARD_FRACTION = 0.5
_EASY_MIX_WEIGHT = (0.0, 0.25)
_HARD_MIX_WEIGHT = (0.3, 0.5)
_EASY_NOISE_STD = 0.5
_HARD_NOISE_STD = 1.0
_HARD_LABEL_NOISE = 0.25
_EASY_CONTRAST = (0.8, 1.2)
_HARD_CONTRAST = (0.8, 1.2)


def write_synthetic_tissuemnist(
    path: str | os.PathLike,
    n_train: int = 1000,
    n_val: int = 300,
    n_test: int = 1000,
    size: int = 28,
    seed: int = 0,
) -> Path:
    """Write a small synthetic 8-class grayscale data set in the MedMNIST ``.npz`` format.

    Args:
        path: Destination file (conventionally ``tissuemnist.npz``); parent folders are created.
        n_train: Number of training images.
        n_val: Number of validation images.
        n_test: Number of test images.
        size: Image side length in pixels.
        seed: Seed of the random generator; the same seed writes the same arrays.

    Returns:
        The path of the written file.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n_images in (("train", n_train), ("val", n_val), ("test", n_test)):
        images, labels = _generate_split(rng, n_images, size)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.stem}-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.replace(tmp_name, destination)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return destination


def _generate_split(rng: np.random.Generator, n_images: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``(N, size, size)`` uint8 images and ``(N, 1)`` uint8 noisy labels."""
    classes = rng.permutation(np.arange(n_images) % N_CLASSES)
    others = (classes + rng.integers(1, N_CLASSES, n_images)) % N_CLASSES
    hard = rng.random(n_images) < _HARD_FRACTION
    mix = np.where(hard, rng.uniform(*_HARD_MIX_WEIGHT, n_images), rng.uniform(*_EASY_MIX_WEIGHT, n_images))
    mix = mix[:, None, None]
    signal = (1.0 - mix) * _gratings(rng, classes, size) + mix * _gratings(rng, others, size)
    contrast = np.where(hard, rng.uniform(*_HARD_CONTRAST, n_images), rng.uniform(*_EASY_CONTRAST, n_images))[
        :, None, None
    ]
    brightness = rng.uniform(-0.2, 0.2, (n_images, 1, 1))
    noise_std = np.where(hard, _HARD_NOISE_STD, _EASY_NOISE_STD)[:, None, None]
    noise = rng.normal(0.0, 1.0, (n_images, size, size)) * noise_std
    images = 0.5 + 0.25 * (brightness + contrast * signal + noise)
    labels = classes.copy()
    relabel = hard & (rng.random(n_images) < _HARD_LABEL_NOISE)
    labels[relabel] = rng.integers(0, N_CLASSES, int(relabel.sum()))
    return np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8), labels.astype(np.uint8)[:, None]


def _gratings(rng: np.random.Generator, classes: np.ndarray, size: int) -> np.ndarray:
    """Draw one randomly jittered sinusoidal grating per class index, shape ``(N, size, size)``, values in [-1, 1]."""
    n_images = len(classes)
    orientation = np.deg2rad(
        np.asarray(_ORIENTATIONS_DEG)[classes % len(_ORIENTATIONS_DEG)]
        + rng.normal(0.0, _ORIENTATION_JITTER_DEG, n_images)
    )
    cycles = np.asarray(_CYCLES_PER_IMAGE)[classes // len(_ORIENTATIONS_DEG)] * (
        1.0 + rng.normal(0.0, _FREQUENCY_JITTER, n_images)
    )
    phase = rng.uniform(0.0, 2.0 * np.pi, n_images)
    coords = np.arange(size) / size
    x = coords[None, None, :]
    y = coords[None, :, None]
    projection = x * np.cos(orientation)[:, None, None] + y * np.sin(orientation)[:, None, None]
    return np.cos(2.0 * np.pi * cycles[:, None, None] * projection + phase[:, None, None])
