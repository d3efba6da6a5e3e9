"""Subject IDs of a guest bundle's data list: who each training item belongs to.

A guest bundle's items are its own dicts (``{"image": path, "label": ...}``). A forget request names subjects, so
each item gets a ``subject`` (:data:`medunlearn_monai.forget.SUBJECT_KEY`) read in one of two ways:

- by default, the image file's name without its extension: ``imagesTr/spleen_10.nii.gz`` -> ``spleen_10``
  (one subject per file, as in the Medical Segmentation Decathlon);
- with ``subject_key``, the value of that key (a column of a CSV data list) of each item, when one subject has
  several items (studies, views, time points).

Everything downstream (request validation, salted hashing, splits, certificates) is the project's, unchanged.
Error messages name keys and item positions, never a subject ID or a file name, which may carry one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from medunlearn_monai.forget import SUBJECT_KEY

IMAGE_KEY = "image"
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")


class GuestDataError(ValueError):
    """A guest bundle's data list that subject IDs cannot be read from."""


def subject_from_file_name(path: str | os.PathLike) -> str:
    """The file's name without its extension; a compression suffix goes with it (``a.nii.gz`` -> ``a``)."""
    name = PurePath(path)
    if name.suffix.lower() in COMPRESSION_SUFFIXES:
        name = name.with_suffix("")
    return name.with_suffix("").name


def subject_id(item: Mapping[str, Any], subject_key: str | None = None, position: int = 0) -> str:
    """The subject ID of one guest item: its ``subject_key`` value, or its image file's name without extension.

    Args:
        item: one item of the guest's data list.
        subject_key: the item key holding the subject ID; None reads it from the image file's name.
        position: the item's position in its list, for messages.

    Raises:
        GuestDataError: when the item is not a dict, lacks the key, or (by default) its image is not one file path.
    """
    if not isinstance(item, Mapping):
        raise GuestDataError(f"item #{position + 1} of the guest's data list is a {type(item).__name__}, not a dict.")
    if subject_key is not None:
        if subject_key not in item:
            raise GuestDataError(
                f"item #{position + 1} of the guest's data list has no key {subject_key!r} (--subject_key); "
                f"its keys are {sorted(map(str, item))}."
            )
        value = str(item[subject_key]).strip()
        if not value:
            raise GuestDataError(f"item #{position + 1} of the guest's data list has an empty {subject_key!r}.")
        return value
    image = item.get(IMAGE_KEY)
    if not isinstance(image, (str, os.PathLike)):
        kind = "no 'image' key" if image is None else f"an 'image' that is a {type(image).__name__}"
        raise GuestDataError(
            f"item #{position + 1} of the guest's data list has {kind}, so its subject cannot be read from a file "
            "name: pass --subject_key KEY, the item key that holds the subject ID."
        )
    return subject_from_file_name(image)


def with_subjects(items: Sequence[Mapping[str, Any]], subject_key: str | None = None) -> list[dict[str, Any]]:
    """Copies of a guest's items, each with its ``subject`` (see :func:`subject_id`).

    Raises:
        GuestDataError: when ``items`` is not a list of dicts or a subject cannot be read from an item.
    """
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise GuestDataError(f"the guest's data list must be a list of item dicts, got a {type(items).__name__}.")
    return [{**item, SUBJECT_KEY: subject_id(item, subject_key, position)} for position, item in enumerate(items)]
