"""Reader for the MedMNIST / MedMNIST+ ``.npz`` format.

A MedMNIST archive holds ``{split}_images`` and ``{split}_labels`` for the ``train``, ``val`` and ``test`` splits.
Images are ``uint8`` arrays of shape ``(N, H, W)`` (grayscale) or ``(N, H, W, 3)`` (RGB) with ``H == W`` in
{28, 64, 128, 224}; labels are integer arrays of shape ``(N, 1)`` (multi-class) or ``(N, K)`` (multi-label).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

MEDMNIST_SPLITS: tuple[str, ...] = ("train", "val", "test")
MEDMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)

_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


class MedMNISTFormatError(ValueError):
    """Raised when a file does not follow the MedMNIST ``.npz`` layout."""


def load_medmnist_items(
    npz_path: str | os.PathLike, split: str, dataset_name: str | None = None, num_classes: int | None = None
) -> list[dict[str, Any]]:
    """Load one split of a MedMNIST ``.npz`` archive as a list of MONAI-style item dicts.

    Args:
        npz_path: Path to the MedMNIST ``.npz`` file (e.g. ``tissuemnist.npz`` or ``tissuemnist_64.npz``).
        split: One of :data:`MEDMNIST_SPLITS`.
        dataset_name: Prefix of the subject IDs; defaults to the file stem.
        num_classes: If given, multi-class labels must lie in ``0..num_classes - 1`` (the network's outputs).

    Returns:
        One dict per image with ``"image"`` (channel-first ``uint8`` array, ``(1, H, W)`` or ``(3, H, W)``),
        ``"label"`` (``int`` for ``(N, 1)`` labels, ``int64`` vector for multi-label) and ``"subject"``
        (``f"{dataset_name}-{split}-{index:06d}"``).

    Raises:
        FileNotFoundError: If ``npz_path`` does not exist.
        MedMNISTFormatError: If the split name is unknown, the file does not follow the MedMNIST format or a label
            is outside the class range.
    """
    if split not in MEDMNIST_SPLITS:
        raise MedMNISTFormatError(f"Unknown MedMNIST split {split!r}; expected one of {MEDMNIST_SPLITS}")
    path = Path(npz_path)
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file not found: {path}")
    images, labels = _read_split_arrays(path, split)
    images = _channel_first_images(path, split, images)
    _check_labels(path, split, labels, len(images), num_classes)
    name = path.stem if dataset_name is None else dataset_name
    return [
        {
            "image": image,
            "label": int(label[0]) if labels.shape[1] == 1 else label.astype(np.int64),
            "subject": f"{name}-{split}-{index:06d}",
        }
        for index, (image, label) in enumerate(zip(images, labels, strict=True))
    ]


def _read_split_arrays(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the ``{split}_images`` and ``{split}_labels`` arrays from a ``.npz`` archive."""
    image_key, label_key = f"{split}_images", f"{split}_labels"
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        # np.load calls any content it does not know "pickled data" and suggests allow_pickle: wrong advice here.
        reason = exc if zipfile.is_zipfile(path) else "not a zip file: truncated or another format"
        raise MedMNISTFormatError(f"{path}: not a valid .npz archive ({reason})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise MedMNISTFormatError(f"{path}: not a valid .npz archive (it holds a single .npy array)")
    with archive:
        missing = [key for key in (image_key, label_key) if key not in archive.files]
        if missing:
            raise MedMNISTFormatError(
                f"{path}: missing key(s) {missing} for split {split!r}; keys present: {sorted(archive.files)}"
            )
        try:
            return archive[image_key], archive[label_key]
        except _READ_ERRORS as exc:
            raise MedMNISTFormatError(f"{path}: cannot read {image_key!r} / {label_key!r} ({exc})") from exc


def _channel_first_images(path: Path, split: str, images: np.ndarray) -> np.ndarray:
    """Validate ``(N, H, W)`` / ``(N, H, W, 3)`` ``uint8`` images and return them as ``(N, C, H, W)``."""
    if images.dtype != np.uint8:
        raise MedMNISTFormatError(f"{path}: {split}_images must be uint8, got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] == 3:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    else:
        raise MedMNISTFormatError(
            f"{path}: unsupported {split}_images shape {images.shape}; expected (N, H, W) or (N, H, W, 3)"
        )
    height, width = images.shape[2:]
    if height != width or height not in MEDMNIST_SIZES:
        raise MedMNISTFormatError(
            f"{path}: unsupported {split}_images size {height}x{width}; expected square images of size "
            f"{' / '.join(map(str, MEDMNIST_SIZES))}"
        )
    return images


def _check_labels(path: Path, split: str, labels: np.ndarray, n_images: int, num_classes: int | None = None) -> None:
    """Validate that labels are an integer ``(N, K)`` array matching the number of images, and that multi-class
    labels are class indices below ``num_classes`` when it is given."""
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise MedMNISTFormatError(f"{path}: unsupported {split}_labels shape {labels.shape}; expected (N, 1) or (N, K)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise MedMNISTFormatError(f"{path}: {split}_labels must be integers, got dtype {labels.dtype}")
    if labels.shape[0] != n_images:
        raise MedMNISTFormatError(
            f"{path}: {split}_images has {n_images} images but {split}_labels has {labels.shape[0]} labels"
        )
    if num_classes is not None and labels.shape[1] == 1:
        bad = np.unique(labels[(labels < 0) | (labels >= num_classes)])
        if bad.size:
            raise MedMNISTFormatError(
                f"{path}: {split}_labels holds values {bad[:10].tolist()} outside the class range 0..{num_classes - 1}"
            )
