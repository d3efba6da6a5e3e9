"""Reader for the MRBrainS18 brain-segmentation layouts, yielding MONAI data dicts.

MRBrainS18 released 7 training subjects of 3 T brain MRI: three sequences registered to the FLAIR scan
(0.958 x 0.958 x 3.0 mm) and a manual segmentation into 10 structures, laid out as::

    <root>/training/<subject>/pre/FLAIR.nii.gz
    <root>/training/<subject>/pre/reg_T1.nii.gz    (or T1.nii.gz)
    <root>/training/<subject>/pre/reg_IR.nii.gz    (or IR.nii.gz)
    <root>/training/<subject>/segm.nii.gz

MedicalNet re-packed the same data flat (``images/<id>.nii.gz``, ``labels/<id>.nii.gz``, listed in a ``train.txt``)
and trained on a binary brain-tissue / background merge of the labels.

Both readers return items ``{"image": [one path per modality], "label": path, "subject": name}`` for
``monai.transforms.LoadImaged(keys=["image", "label"], ensure_channel_first=True)``, which stacks the image list into
channels. Paths are plain strings so that the items can be written to a JSON data list.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

LABEL_NAMES: tuple[str, ...] = (
    "background",
    "cortical gray matter",
    "basal ganglia",
    "white matter",
    "white matter lesions",
    "cerebrospinal fluid",
    "ventricles",
    "cerebellum",
    "brain stem",
    "infarction",
    "other",
)
MODALITIES: tuple[str, ...] = ("T1", "IR", "FLAIR")
LABEL_MERGES: tuple[str, ...] = ("binary", "challenge")
INPUT_REGIMES: tuple[str, ...] = ("patch", "whole")

_MAX_LABEL = len(LABEL_NAMES) - 1
# The challenge ships the T1 and IR scans both raw and registered to FLAIR; only the registered ones share its grid.
_MODALITY_FILES: dict[str, tuple[str, ...]] = {
    "T1": ("reg_T1.nii.gz", "T1.nii.gz"),
    "IR": ("reg_IR.nii.gz", "IR.nii.gz"),
    "FLAIR": ("FLAIR.nii.gz",),
}
_LABEL_FILE = "segm.nii.gz"
# Target value of each original label 0..10, per merge.
_MERGE_TARGETS: dict[str, tuple[int, ...]] = {
    "binary": (0,) + (1,) * _MAX_LABEL,
    # The challenge scores labels 1..8 only; infarction and "other" are counted as background.
    "challenge": (0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0),
}
_MERGE_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "binary": ("background", "brain tissue"),
    "challenge": LABEL_NAMES[:9],
}
# Dot folders are the synthetic writer's staging folders; "__MACOSX" and the like come from unpacked zip archives.
_SKIPPED_FOLDER_PREFIXES = (".", "__")
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError)


class MRBrainS18FormatError(ValueError):
    """Raised when files do not follow the MRBrainS18 (or MedicalNet) layout; the message names the file."""


def check_modalities(modalities: str | Iterable[str]) -> tuple[str, ...]:
    """Validate a choice of modalities and return it as a tuple, in the order given.

    Args:
        modalities: Names from :data:`MODALITIES`, e.g. ``("FLAIR",)`` or ``("T1", "FLAIR")``; a single name is
            accepted as a string.

    Returns:
        The names as a tuple; their order is the channel order of the items.

    Raises:
        ValueError: If the choice is empty, repeats a name or holds an unknown name.
    """
    names = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    unknown = [name for name in names if name not in MODALITIES]
    if unknown:
        raise ValueError(f"Unknown MRBrainS18 modality {unknown[0]!r}; expected names from {MODALITIES}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"Modalities must be a non-empty choice of distinct names from {MODALITIES}, got {names}")
    return names


def label_merge(name: str = "binary") -> tuple[list[int], list[int]]:
    """Return the label mapping of a merge for ``monai.transforms.MapLabelValued``.

    Args:
        name: ``"binary"`` (labels 1..10 become 1, brain tissue) or ``"challenge"`` (labels 1..8 kept, 9 and 10
            become background).

    Returns:
        ``(orig_labels, target_labels)``: the labels 0..10 and the class each one becomes.

    Raises:
        ValueError: If the merge name is unknown.
    """
    _check_merge(name)
    return list(range(len(LABEL_NAMES))), list(_MERGE_TARGETS[name])


def class_names(name: str = "binary") -> list[str]:
    """Return the output class names of a merge, index = class.

    Raises:
        ValueError: If the merge name is unknown.
    """
    _check_merge(name)
    return list(_MERGE_CLASS_NAMES[name])


def num_classes(name: str = "binary") -> int:
    """Return the number of output classes (background included) of a merge.

    Raises:
        ValueError: If the merge name is unknown.
    """
    return len(class_names(name))


def check_input_regime(name: str) -> str:
    """Validate the segmentation bundle's ``input_regime`` and return it.

    ``"patch"`` trains on random crops and segments a subject with a sliding window; ``"whole"`` is MedicalNet's
    pipeline: each subject cropped to its foreground and resized to one fixed shape, whole volumes in and out.

    Raises:
        ValueError: If ``name`` is not one of :data:`INPUT_REGIMES`.
    """
    if name not in INPUT_REGIMES:
        raise ValueError(f"Unknown input_regime {name!r}; expected one of {INPUT_REGIMES}")
    return name


def find_mrbrains18_subjects(
    root: str | os.PathLike, modalities: str | Iterable[str] = MODALITIES, require_label: bool = True
) -> list[dict[str, Any]]:
    """List the subjects of an MRBrainS18 challenge folder.

    Only file names are checked; :func:`validate_subjects` reads the volumes.

    Args:
        root: The folder holding ``training/``, or the ``training`` folder itself.
        modalities: Modalities to load, in channel order (see :func:`check_modalities`).
        require_label: Whether every subject needs ``segm.nii.gz``; inference on new scans does not, and its
            items then carry no ``label``.

    Returns:
        One item per subject folder, sorted by folder name (plain string order, so ``"070"`` comes first):
        ``{"image": [path per modality], "label": path of segm.nii.gz, "subject": folder name}``.

    Raises:
        FileNotFoundError: If ``root`` does not exist.
        ValueError: If ``modalities`` is not a valid choice.
        MRBrainS18FormatError: If there are no subject folders, or a subject lacks a modality or its segmentation.
    """
    names = check_modalities(modalities)
    training = _training_folder(root)
    folders = sorted(
        (path for path in training.iterdir() if path.is_dir() and not path.name.startswith(_SKIPPED_FOLDER_PREFIXES)),
        key=lambda path: path.name,
    )
    if not folders:
        raise MRBrainS18FormatError(
            f"{training}: no subject folders; expected <subject>/pre/FLAIR.nii.gz and <subject>/{_LABEL_FILE}"
        )
    return [_subject_item(folder, names, require_label) for folder in folders]


def find_medicalnet_subjects(root: str | os.PathLike, list_file: str | os.PathLike) -> list[dict[str, Any]]:
    """List the subjects of MedicalNet's flat layout from its list file.

    Each non-blank line of the list file is ``<image path> <label path>``, relative to ``root`` (MedicalNet's
    ``train.txt``, e.g. ``images/1.nii.gz labels/1.nii.gz``).

    Args:
        root: Folder the listed paths are relative to.
        list_file: The list file; a relative path that does not exist as given is looked up under ``root``.

    Returns:
        One item per line, in file order: ``{"image": [path], "label": path, "subject": image name without
        .nii.gz}``.

    Raises:
        FileNotFoundError: If the list file does not exist.
        MRBrainS18FormatError: If a line is not two paths, or a listed file does not exist.
    """
    base = Path(root)
    path = Path(list_file)
    if not path.is_file() and not path.is_absolute() and (base / path).is_file():
        path = base / path
    if not path.is_file():
        raise FileNotFoundError(f"MedicalNet list file not found: {path}")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise MRBrainS18FormatError(
                f"{path}: line {number}: expected '<image path> <label path>', got {len(fields)} field(s)"
            )
        image, label = (base / field for field in fields)
        for listed in (image, label):
            if not listed.is_file():
                raise MRBrainS18FormatError(f"{listed}: listed in {path} line {number} but not found")
        items.append({"image": [str(image)], "label": str(label), "subject": _strip_nifti_suffix(image.name)})
    return items


def hold_out(
    items: Sequence[dict[str, Any]], subject_ids: Iterable[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``items`` into (training items, held-out test items) by subject ID.

    Raises:
        ValueError: when no subject is held out (validation and the test split need one), when an ID
            is not in ``items`` (named by its position in ``subject_ids``), or when nothing would be
            left to train on.
    """
    held = [str(subject) for subject in subject_ids]
    if not held:
        raise ValueError("test_subjects is empty: hold out at least one subject for validation and testing.")
    known = {item["subject"] for item in items}
    unknown = [f"#{position + 1}" for position, subject in enumerate(held) if subject not in known]
    if unknown:
        raise ValueError(f"test_subjects entries {', '.join(unknown)} are not subjects of the data set.")
    train = [item for item in items if item["subject"] not in held]
    if not train:
        raise ValueError("test_subjects holds out every subject: nothing is left to train on.")
    return train, [item for item in items if item["subject"] in held]


def validate_subjects(items: Iterable[dict[str, Any]]) -> None:
    """Read every volume of the items fully and check that they form a consistent segmentation data set.

    The voxel data are decompressed, not just the headers, so a truncated or corrupt file is caught here rather than
    in the middle of training.

    Args:
        items: Items from :func:`find_mrbrains18_subjects` or :func:`find_medicalnet_subjects`.

    Raises:
        MRBrainS18FormatError: If a file is not a readable NIfTI volume, a volume is not 3D, an image holds NaN or
            infinite voxels, a modality's shape differs from the subject's first modality, the label's shape differs
            from the image, or the label holds values that are not integers in 0..10.
    """
    for item in items:
        images = [item["image"]] if isinstance(item["image"], str | os.PathLike) else list(item["image"])
        shape = None
        for image_path in images:
            image = _read_volume(image_path)
            _check_finite(image_path, image)
            image_shape = image.shape
            if shape is not None and image_shape != shape:
                raise MRBrainS18FormatError(
                    f"{image_path}: shape {image_shape} differs from {images[0]} with shape {shape}"
                )
            shape = image_shape
        label = _read_volume(item["label"])
        if label.shape != shape:
            raise MRBrainS18FormatError(f"{item['label']}: label shape {label.shape} differs from image shape {shape}")
        _check_label_values(item["label"], label)


def _check_merge(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one of :data:`LABEL_MERGES`."""
    if name not in _MERGE_TARGETS:
        raise ValueError(f"Unknown MRBrainS18 label merge {name!r}; expected one of {LABEL_MERGES}")


def _training_folder(root: str | os.PathLike) -> Path:
    """Return ``root/training`` if it exists, else ``root`` (taken to be the training folder itself)."""
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"MRBrainS18 folder not found: {path}")
    training = path / "training"
    return training if training.is_dir() else path


def _subject_item(folder: Path, modalities: Sequence[str], require_label: bool = True) -> dict[str, Any]:
    """Build the item of one subject folder, checking that its files exist."""
    item = {"image": [str(_modality_path(folder / "pre", modality)) for modality in modalities], "subject": folder.name}
    label = folder / _LABEL_FILE
    if label.is_file():
        item["label"] = str(label)
    elif require_label:
        raise MRBrainS18FormatError(f"{label}: segmentation not found")
    return item


def _modality_path(pre: Path, modality: str) -> Path:
    """Return the first existing file name of a modality, preferring the registered ``reg_`` scan."""
    candidates = _MODALITY_FILES[modality]
    for name in candidates:
        if (pre / name).is_file():
            return pre / name
    alternatives = f" (or {' / '.join(candidates[1:])})" if len(candidates) > 1 else ""
    raise MRBrainS18FormatError(f"{pre / candidates[0]}{alternatives}: {modality} image not found")


def _strip_nifti_suffix(name: str) -> str:
    """Drop a ``.nii.gz`` or ``.nii`` suffix from a file name."""
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_volume(path: str | os.PathLike) -> np.ndarray:
    """Load a NIfTI file and decompress all of its voxels; it must be a 3D volume."""
    try:
        data = np.asanyarray(nib.load(path).dataobj)
    except _READ_ERRORS as exc:
        raise MRBrainS18FormatError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 3:
        raise MRBrainS18FormatError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data


def _check_finite(path: str | os.PathLike, image: np.ndarray) -> None:
    """Check that every voxel is finite: one NaN spreads through intensity normalisation into the whole loss."""
    if np.issubdtype(image.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(image)))
        if bad:
            raise MRBrainS18FormatError(f"{path}: {bad} voxels are NaN or infinite; fix or mask them in the scan")


def _check_label_values(path: str | os.PathLike, label: np.ndarray) -> None:
    """Check that every label value is an integer in 0..10 (NaN fails the integer test)."""
    values = np.unique(label)
    if np.issubdtype(values.dtype, np.integer):
        bad = values[(values < 0) | (values > _MAX_LABEL)]
    else:
        bad = values[~((values >= 0) & (values <= _MAX_LABEL) & (values == np.round(values)))]
    if bad.size:
        raise MRBrainS18FormatError(
            f"{path}: label values {bad[:10].tolist()} are not MRBrainS18 labels (integers 0..{_MAX_LABEL})"
        )
