"""Salted identities of training items, carried from the training dataset into the trainer's batches.

An item's identity is ``sha256(<salted subject SHA-256> NUL <item key>)``, where the item key is the image file
path(s) relative to the bundle's ``dataset_dir`` (CheXpert, MRBrainS18) or, for images held in memory (MedMNIST),
the SHA-256 of the array's dtype, shape and bytes. Relative paths keep it valid when the data move; the salt keeps
it from naming anyone.

:func:`with_item_identities` puts :class:`ItemIdentityd` first in a training pipeline: every item the dataset
yields then carries its identity under :data:`ITEM_IDENTITY_KEY`, computed from the dataset's own item before any
transform, so each batch tells the erasure certificate which items the trainer consumed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Transform

from medunlearn_monai.forget import SUBJECT_KEY, hash_subject

ITEM_IDENTITY_KEY = "item_sha256"


def item_key(item: Mapping[str, Any], dataset_dir: str | os.PathLike) -> str:
    """The stable key of one item's image: relative path(s) for files, a content digest for arrays.

    Raises:
        TypeError: when the image is neither path(s) nor an array.
    """
    image = item["image"]
    paths = [image] if isinstance(image, (str, os.PathLike)) else image
    if isinstance(paths, (list, tuple)) and all(isinstance(path, (str, os.PathLike)) for path in paths):
        root = os.path.abspath(dataset_dir)
        return "|".join(Path(os.path.relpath(os.path.abspath(path), root)).as_posix() for path in paths)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        array = np.ascontiguousarray(image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image)
        header = f"{array.dtype.str}{array.shape}".encode()
        return hashlib.sha256(header + b"\x00" + array.tobytes()).hexdigest()
    raise TypeError(f"cannot key an item whose image is a {type(image).__name__}; expected path(s) or an array.")


def item_identity(item: Mapping[str, Any], salt: bytes, dataset_dir: str | os.PathLike) -> str:
    """Salted identity of one item: its subject's salted hash joined with its :func:`item_key`, hashed."""
    subject = hash_subject(item[SUBJECT_KEY], salt)
    return hashlib.sha256(f"{subject}\x00{item_key(item, dataset_dir)}".encode()).hexdigest()


class ItemIdentityd(Transform):
    """Add an item's salted identity (:func:`item_identity`) under :data:`ITEM_IDENTITY_KEY`.

    Deterministic, so a ``CacheDataset`` computes it once, from the raw item it holds.

    Args:
        salt: the deployment's salt for subject hashes.
        dataset_dir: root of relative item keys.

    Raises:
        TypeError: when ``salt`` is not bytes.
    """

    def __init__(self, salt: bytes, dataset_dir: str | os.PathLike):
        if not isinstance(salt, bytes):
            raise TypeError(f"salt must be bytes, got {type(salt).__name__}.")
        self.salt = salt
        self.dataset_dir = dataset_dir

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return {**data, ITEM_IDENTITY_KEY: item_identity(data, self.salt, self.dataset_dir)}


def with_item_identities(preprocessing: Compose, salt: bytes, dataset_dir: str | os.PathLike) -> Compose:
    """``preprocessing`` with :class:`ItemIdentityd` in front, as one flat ``Compose``.

    Flat, because ``CacheDataset`` caches up to the first random transform of its own list and would treat a
    nested ``Compose`` as random.
    """
    return Compose(
        [ItemIdentityd(salt, dataset_dir), *preprocessing.transforms],
        map_items=preprocessing.map_items,
        unpack_items=preprocessing.unpack_items,
        log_stats=preprocessing.log_stats,
        lazy=preprocessing.lazy,
        overrides=preprocessing.overrides,
    )
