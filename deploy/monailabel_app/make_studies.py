"""Write a MONAI Label studies folder from MRBrainS18-layout subjects: one 4-D NIfTI ``<studies>/<subject>.nii.gz``.

MONAI Label's datastore serves one image file per study, while the bundle's ``LoadImaged`` reads the three modalities
(T1, IR, FLAIR) of a subject as three channels. Stacked in that order along a fourth axis, on the T1 scan's grid and
header, one file loads (``LoadImaged`` then ``EnsureChannelFirstd``) to the same channel-first float32 volume.

Run (any venv with ``medunlearn_monai``): ``python deploy/monailabel_app/make_studies.py <MRBrainS18 folder> <studies>``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from medunlearn_monai.data.mrbrains18 import MODALITIES, find_mrbrains18_subjects


def write_studies(source: str | os.PathLike, studies: str | os.PathLike) -> list[Path]:
    """Stack each subject's modalities into ``<studies>/<subject>.nii.gz``; return the files written."""
    studies = Path(studies)
    studies.mkdir(parents=True, exist_ok=True)
    written = []
    for subject in find_mrbrains18_subjects(source, MODALITIES, require_label=False):
        scans = [nib.load(path) for path in subject["image"]]
        reference = scans[0]
        for path, scan in zip(subject["image"], scans, strict=True):
            if scan.shape != reference.shape or not np.allclose(scan.affine, reference.affine):
                raise ValueError(f"{path}: not on the grid of {subject['image'][0]}")
        volume = np.stack([np.asarray(scan.dataobj, dtype=np.float32) for scan in scans], axis=-1)
        image = nib.Nifti1Image(volume, reference.affine, header=reference.header)
        image.set_data_dtype(np.float32)
        target = studies / f"{subject['subject']}.nii.gz"
        nib.save(image, target)
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="MRBrainS18 folder (<subject>/pre/{reg_T1,reg_IR,FLAIR}.nii.gz)")
    parser.add_argument("studies", help="MONAI Label studies folder to write")
    args = parser.parse_args()
    for path in write_studies(args.source, args.studies):
        print(path)


if __name__ == "__main__":
    main()
