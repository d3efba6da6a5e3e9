"""NIfTI in and out of the MONAI Deploy app: plain functions, so they are tested without the Deploy SDK.

The SDK's own ``NiftiDataLoader`` reads one file and drops the affine; the MRBrainS18 bundle needs three
registered modalities stacked as channels and the voxel spacing (its preprocessing resamples to 0.958 x 0.958 x
3 mm), so subjects are read here with MONAI's ``LoadImage``, which keeps both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.transforms import LoadImage

from medunlearn_monai.data.mrbrains18 import MODALITIES, find_mrbrains18_subjects

SUBJECT_KEY = "subject"


def find_subjects(input_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The subjects of an MRBrainS18-layout folder (``[training/]<subject>/pre/{reg_T1,reg_IR,FLAIR}.nii.gz``).

    Raises:
        FileNotFoundError: when ``input_dir`` does not exist.
        MRBrainS18FormatError: when it holds no subject folder or a subject lacks a modality.
    """
    return find_mrbrains18_subjects(input_dir, MODALITIES, require_label=False)


def load_subject(item: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a subject's modalities as one channel-first array ``(3, W, H, D)`` and its metadata.

    The metadata holds MONAI's keys (``affine``, ``original_affine``, ``spacing``, ``original_channel_dim``...),
    which the bundle's preprocessing needs, plus ``subject``, which names the output file.
    """
    image = LoadImage(image_only=True)(item["image"])
    metadata = dict(image.meta)
    metadata[SUBJECT_KEY] = item["subject"]
    return image.numpy(), metadata


def write_segmentation(labels_dhw: np.ndarray, metadata: dict[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write a label volume from the bundle operator (``(D, H, W)``, uint8) as ``<subject>_seg.nii.gz``.

    The bundle's postprocessing inverts the resampling, so the labels lie on the input grid: they are saved with
    the input's affine (``original_affine``).

    Raises:
        KeyError: when the metadata lacks ``original_affine`` or ``subject`` (the image did not come from
            :func:`load_subject`).
    """
    for key in ("original_affine", SUBJECT_KEY):
        if key not in metadata:
            raise KeyError(f"segmentation metadata lacks '{key}': the input must be read with load_subject().")
    labels = np.ascontiguousarray(np.swapaxes(np.asarray(labels_dhw), 0, 2)).astype(np.uint8)
    affine = np.asarray(metadata["original_affine"], dtype=np.float64)
    path = Path(output_dir) / f"{metadata[SUBJECT_KEY]}_seg.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, affine), str(path))
    return path
