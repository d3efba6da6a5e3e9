"""Test helpers: small data in the layouts model-zoo's guest bundles read, and the guests' folder and file hashes.

- ``spleen_ct_segmentation``: the Medical Segmentation Decathlon's Task09_Spleen layout, ``imagesTr/<id>.nii.gz``
  and ``labelsTr/<id>.nii.gz``: CT-like volumes in Hounsfield units with an ellipsoid blob as the spleen.
- ``classification_template``: what its ``docs/generate_data.ipynb`` makes, 2D NIfTI images of nothing, a circle, a
  triangle or a rectangle (labels 0 to 3) listed with their labels in ``train_samples.json``, drawn here.

``tests/`` is on ``sys.path`` because ``tests/conftest.py`` is not in a package (pytest's default import mode).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

MODEL_ZOO = Path(__file__).resolve().parents[1] / "../shared/monai/model-zoo"
SPLEEN_PIXDIM = (1.5, 1.5, 2.0)  # the bundle's Spacingd target, so the volumes are not resampled


def guest_bundle(name: str) -> Path:
    """A model-zoo bundle from the shared folder; skips the test when that folder is absent."""
    folder = MODEL_ZOO.resolve() / name
    if not (folder / "configs").is_dir():
        pytest.skip(f"model-zoo bundle {name} not found at {folder} (the ../shared/monai/model-zoo checkout)")
    return folder


def folder_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path: a new, removed or changed file shows."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def write_spleen_task(root: Path, subjects: Sequence[str], shape: Sequence[int] = (32, 32, 16), seed: int = 0) -> Path:
    """Task09_Spleen-layout volumes, one per subject: soft tissue near 40 HU, an ellipsoid spleen near 120 HU
    (label 1) placed at random, noise; returns ``root``."""
    generator = np.random.default_rng(seed)
    affine = np.diag([*SPLEEN_PIXDIM, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(size) for size in shape], indexing="ij"), axis=-1).astype(float)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        centre = generator.uniform(0.35, 0.65, size=3) * np.asarray(shape)
        radii = generator.uniform(0.15, 0.25, size=3) * np.asarray(shape)
        label = (((grid - centre) / radii) ** 2).sum(axis=-1) <= 1.0
        image = 40.0 + 80.0 * label + generator.normal(0.0, 15.0, size=shape)
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "imagesTr" / f"{subject}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), root / "labelsTr" / f"{subject}.nii.gz")
    return root


def shape_image(label: int, size: int, generator: np.random.Generator) -> np.ndarray:
    """One image of the template's kind: 0 nothing, 1 a circle, 2 a triangle, 3 a rectangle, drawn as ones."""
    rows, columns = np.mgrid[:size, :size]
    border, extent = size // 6, size // 3
    top, left = generator.integers(border, size - border - extent, size=2)
    if label == 1:
        radius = extent / 2
        return (((rows - top - radius) ** 2 + (columns - left - radius) ** 2) <= radius**2).astype(np.float32)
    if label == 2:  # apex at the top, base at the bottom
        inside = (rows >= top) & (rows <= top + extent) & (np.abs(columns - left - extent / 2) <= (rows - top) / 2)
        return inside.astype(np.float32)
    if label == 3:
        inside = (rows >= top) & (rows < top + extent) & (columns >= left) & (columns < left + extent)
        return inside.astype(np.float32)
    return np.zeros((size, size), dtype=np.float32)


def write_shape_images(root: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """``count`` images ``train_data/img<NN>.nii.gz`` (labels cycling 0-3) and ``train_samples.json`` listing them
    with absolute paths, as the template's notebook writes them; returns the JSON file."""
    generator = np.random.default_rng(seed)
    (root / "train_data").mkdir(parents=True, exist_ok=True)
    samples = []
    for index in range(count):
        label = index % 4
        path = root / "train_data" / f"img{index:02}.nii.gz"
        nib.save(nib.Nifti1Image(shape_image(label, size, generator), np.eye(4)), path)
        samples.append({"image": str(path.resolve()), "label": label})
    data_json = root / "train_samples.json"
    data_json.write_text(json.dumps(samples, indent=2))
    return data_json
