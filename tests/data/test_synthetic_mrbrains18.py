"""Tests for the synthetic MRBrainS18 subject generator."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImaged

from medunlearn_monai.data.mrbrains18 import find_mrbrains18_subjects, validate_subjects
from medunlearn_monai.data.synthetic import MRBRAINS18_SUBJECT_IDS, write_synthetic_mrbrains18

SPACING = (4.0, 4.0, 6.0)
IMAGE_FILES = ("reg_T1.nii.gz", "reg_IR.nii.gz", "FLAIR.nii.gz")
GM, WM, LESION, CSF = 1, 3, 4, 5


def _load(path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def _subject(root, subject: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images (3, X, Y, Z) as T1, IR, FLAIR, labels)`` of one written subject."""
    folder = root / "training" / subject
    return np.stack([_load(folder / "pre" / name) for name in IMAGE_FILES]), _load(folder / "segm.nii.gz")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic-mrbrains18")
    return root, write_synthetic_mrbrains18(root, n_subjects=4, spacing=SPACING, seed=0)


def test_writes_exactly_the_challenge_layout(written):
    root, ids = written

    assert ids == ["1", "4", "5", "7"]
    files = sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
    assert files == sorted(
        f"training/{subject}/{name}"
        for subject in ids
        for name in ("segm.nii.gz", *(f"pre/{image}" for image in IMAGE_FILES))
    )
    assert sorted(path.name for path in (root / "training").iterdir()) == sorted(ids)  # no staging folder left


def test_headers_hold_the_spacing_and_a_shared_grid(written):
    root, ids = written
    shapes, affines = set(), []
    for path in sorted((root / "training").rglob("*.nii.gz")):
        image = nib.load(path)
        assert image.header.get_zooms() == pytest.approx(SPACING)
        assert image.get_data_dtype() == (np.uint8 if path.name == "segm.nii.gz" else np.float32)
        assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
        np.testing.assert_allclose(image.header.get_qform(), image.affine, atol=1e-4)
        np.testing.assert_allclose(image.affine[:3, :3], np.diag(SPACING))
        shapes.add(image.shape)
        affines.append(image.affine)
    assert len(shapes) == 1
    (shape,) = shapes
    assert 40 <= shape[0] <= 60 and 50 <= shape[1] <= 70 and 25 <= shape[2] <= 35
    for affine in affines:
        np.testing.assert_allclose(affine, affines[0])
    # The world origin lies inside the grid, near the brain's centre (MNI-like coordinates).
    centre = nib.affines.apply_affine(np.linalg.inv(affines[0]), [0.0, 0.0, 0.0])
    assert np.all(centre > 0) and np.all(centre < np.asarray(shape) - 1)


def test_labels_are_tissue_classes_with_plausible_volumes(written):
    root, ids = written
    for subject in ids:
        _, labels = _subject(root, subject)
        assert set(np.unique(labels).tolist()) <= {0, GM, WM, LESION, CSF}
        brain = np.count_nonzero(labels)
        assert 0.15 < brain / labels.size < 0.6
        fractions = {k: np.count_nonzero(labels == k) / brain for k in (GM, WM, CSF)}
        assert 0.3 < fractions[GM] < 0.65, fractions
        assert 0.25 < fractions[WM] < 0.5, fractions
        assert 0.04 < fractions[CSF] < 0.35, fractions


def test_tissue_contrasts_and_dark_background(written):
    root, ids = written
    for subject in ids:
        images, labels = _subject(root, subject)
        t1, ir, flair = ([image[labels == k].mean() for k in (GM, WM, CSF)] for image in images)
        t1_gm, t1_wm, t1_csf = t1
        assert t1_wm > 1.15 * t1_gm > 1.15 * t1_csf
        ir_gm, ir_wm, ir_csf = ir
        assert ir_wm > 1.3 * ir_gm > 1.3 * ir_csf
        flair_gm, flair_wm, flair_csf = flair
        assert flair_gm > flair_wm > flair_csf
        assert images.dtype == np.float32 and images.min() >= 0.0 and 300 < images.max() < 2000
        corner = images[:, :4, :4, :4]  # air, outside the head
        assert corner.mean() < 0.05 * t1_wm


def test_flair_lesions_are_brighter_than_white_matter(written):
    root, ids = written
    with_lesions = 0
    for subject in ids:
        images, labels = _subject(root, subject)
        if np.any(labels == LESION):
            with_lesions += 1
            assert images[2][labels == LESION].mean() > 1.3 * images[2][labels == WM].mean()
    assert with_lesions >= 2


def test_lesions_can_be_left_out_without_changing_the_anatomy(written, tmp_path):
    root, ids = written
    write_synthetic_mrbrains18(tmp_path, n_subjects=1, spacing=SPACING, seed=0, lesions=False)

    _, with_lesions = _subject(root, ids[0])
    _, without = _subject(tmp_path, ids[0])
    assert LESION not in np.unique(without)
    np.testing.assert_array_equal(without, np.where(with_lesions == LESION, WM, with_lesions))


def test_same_seed_writes_identical_files_whatever_the_subject_count(written, tmp_path):
    root, ids = written
    assert write_synthetic_mrbrains18(tmp_path, n_subjects=2, spacing=SPACING, seed=0) == ids[:2]

    for subject in ids[:2]:
        for name in ("segm.nii.gz", *(f"pre/{image}" for image in IMAGE_FILES)):
            relative = f"training/{subject}/{name}"
            assert (tmp_path / relative).read_bytes() == (root / relative).read_bytes(), relative


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_subjects_differ_in_anatomy_and_contrast(written):
    root, ids = written
    (images_a, labels_a), (images_b, labels_b) = _subject(root, ids[0]), _subject(root, ids[1])

    # Pose and scale move the brain outline a little; atrophy and warping move the tissue boundaries a lot.
    assert _dice(labels_a > 0, labels_b > 0) < 0.97
    assert np.mean([_dice(labels_a == k, labels_b == k) for k in (GM, WM, CSF)]) < 0.8
    for channel in range(3):
        mean_a, mean_b = images_a[channel][labels_a == WM].mean(), images_b[channel][labels_b == WM].mean()
        assert abs(mean_a - mean_b) > 0.02 * max(mean_a, mean_b)


def test_monai_loads_a_subject_as_three_channels(written):
    root, _ = written
    items = find_mrbrains18_subjects(root)
    validate_subjects(items)

    loaded = LoadImaged(keys=["image", "label"], ensure_channel_first=True)(items[0])

    _, labels = _subject(root, items[0]["subject"])
    assert tuple(loaded["image"].shape) == (3, *labels.shape)
    assert tuple(loaded["label"].shape) == (1, *labels.shape)
    np.testing.assert_array_equal(np.asarray(loaded["label"][0]), labels)


def test_more_than_seven_subjects_get_extra_ids_and_replace_old_folders(tmp_path):
    stale = tmp_path / "training" / "4" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")

    ids = write_synthetic_mrbrains18(tmp_path, n_subjects=9, spacing=(12.0, 12.0, 12.0))

    assert ids == [*MRBRAINS18_SUBJECT_IDS, "200", "201"]
    assert [item["subject"] for item in find_mrbrains18_subjects(tmp_path)] == sorted(ids)
    assert not stale.exists()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"n_subjects": 0}, "n_subjects must be at least 1"),
        ({"n_subjects": 2, "subject_ids": ["1"]}, "subject_ids must hold 2 distinct names"),
        ({"n_subjects": 2, "subject_ids": ["1", "1"]}, "subject_ids must hold 2 distinct names"),
        ({"n_subjects": 1, "subject_ids": [".hidden"]}, "not a plain folder name"),
        ({"n_subjects": 1, "subject_ids": ["a/b"]}, "not a plain folder name"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be 3 positive numbers"),
    ],
)
def test_invalid_arguments_are_rejected(tmp_path, kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        write_synthetic_mrbrains18(tmp_path, **kwargs)
    assert not (tmp_path / "training").exists()
