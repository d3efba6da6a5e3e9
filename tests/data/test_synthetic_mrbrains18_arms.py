"""Tests for the alike and distinct arms of the synthetic MRBrainS18 generator and ``medunlearn synthesize``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medunlearn_monai.cli import main
from medunlearn_monai.data.mrbrains18 import LABEL_NAMES, label_merge
from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18

SPACING = (4.0, 4.0, 6.0)
FILES = ("segm.nii.gz", "pre/reg_T1.nii.gz", "pre/reg_IR.nii.gz", "pre/FLAIR.nii.gz")
INFARCT = LABEL_NAMES.index("infarction")
DISTINCT = ["1", "5"]


def _load(root, subject: str, name: str) -> np.ndarray:
    return np.asanyarray(nib.load(root / "training" / subject / name).dataobj)


def _same_files(root_a, root_b, subject: str) -> bool:
    folder_a, folder_b = root_a / "training" / subject, root_b / "training" / subject
    return all((folder_a / name).read_bytes() == (folder_b / name).read_bytes() for name in FILES)


def _t1_flair_correlation(root, subject: str) -> float:
    brain = _load(root, subject, "segm.nii.gz") > 0
    t1, flair = (_load(root, subject, name)[brain] for name in FILES[1::2])
    return float(np.corrcoef(t1, flair)[0, 1])


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    """Three subjects (1, 4, 5) written by default and in the distinct arm with subjects 1 and 5 chosen."""
    alike, distinct = tmp_path_factory.mktemp("alike"), tmp_path_factory.mktemp("distinct")
    write_synthetic_mrbrains18(alike, n_subjects=3, spacing=SPACING, seed=0)
    write_synthetic_mrbrains18(
        distinct, n_subjects=3, spacing=SPACING, seed=0, arm="distinct", distinct_subjects=DISTINCT
    )
    return alike, distinct


def test_alike_arm_is_the_default_byte_for_byte(arms, tmp_path):
    alike, _ = arms
    write_synthetic_mrbrains18(tmp_path, n_subjects=3, spacing=SPACING, seed=0, arm="alike")

    for subject in ("1", "4", "5"):
        assert _same_files(tmp_path, alike, subject), subject


def test_only_the_chosen_subjects_get_a_large_infarct_inside_the_brain(arms):
    alike, distinct = arms
    assert _same_files(alike, distinct, "4")
    assert INFARCT not in _load(alike, "1", "segm.nii.gz")
    for subject in DISTINCT:
        labels, alike_labels = _load(distinct, subject, "segm.nii.gz"), _load(alike, subject, "segm.nii.gz")
        infarct = labels == INFARCT
        assert np.count_nonzero(infarct) * np.prod(SPACING) > 10_000  # more than 10 ml
        extents = [np.ptp(np.nonzero(infarct)[axis]) * SPACING[axis] for axis in range(3)]
        assert min(extents) >= 20.0, extents
        assert np.all(alike_labels[infarct] > 0)  # it replaces brain tissue only
        np.testing.assert_array_equal(labels[~infarct], alike_labels[~infarct])


def test_infarct_is_brighter_than_every_tissue_in_every_modality(arms):
    _, distinct = arms
    for subject in DISTINCT:
        labels = _load(distinct, subject, "segm.nii.gz")
        for name in FILES[1:]:
            image = _load(distinct, subject, name)
            brightest_tissue = max(
                image[labels == tissue].mean() for tissue in (1, 3, 4, 5) if np.any(labels == tissue)
            )
            assert image[labels == INFARCT].mean() > 1.3 * brightest_tissue, (subject, name)


def test_distinct_flair_reverses_its_contrast_to_t1_and_t1_ir_stay_as_alike(arms):
    alike, distinct = arms
    for subject in DISTINCT:
        assert _t1_flair_correlation(alike, subject) > 0.2
        assert _t1_flair_correlation(distinct, subject) < -0.1
        # Away from the infarct the T1 and IR scans are those of the alike subject, voxel for voxel.
        away = ~ndimage.binary_dilation(_load(distinct, subject, "segm.nii.gz") == INFARCT, iterations=2)
        for name in FILES[1:3]:
            np.testing.assert_array_equal(_load(distinct, subject, name)[away], _load(alike, subject, name)[away])


def test_a_count_chooses_the_first_subjects(arms, tmp_path):
    alike, distinct = arms
    write_synthetic_mrbrains18(tmp_path, n_subjects=2, spacing=SPACING, seed=0, arm="distinct", distinct_subjects=1)

    assert _same_files(tmp_path, distinct, "1")
    assert _same_files(tmp_path, alike, "4")


def test_infarct_is_foreground_under_binary_merge_and_background_under_challenge_merge():
    for merge, target in (("binary", 1), ("challenge", 0)):
        orig_labels, target_labels = label_merge(merge)
        assert target_labels[orig_labels.index(INFARCT)] == target, merge


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"arm": "outlier"}, "unknown arm 'outlier'; choose one of alike, distinct"),
        ({"arm": "distinct"}, "arm 'distinct' needs distinct_subjects"),
        ({"distinct_subjects": ["1"]}, "distinct_subjects is only for arm 'distinct'"),
        ({"arm": "distinct", "distinct_subjects": ["1", "9"]}, r"distinct_subjects \['9'\] are not among the subjects"),
        ({"arm": "distinct", "distinct_subjects": []}, "distinct_subjects is empty"),
        ({"arm": "distinct", "distinct_subjects": 0}, r"count must be in 1\.\.2, got 0"),
        ({"arm": "distinct", "distinct_subjects": 3}, r"count must be in 1\.\.2, got 3"),
    ],
)
def test_invalid_arm_arguments_are_rejected_before_writing(tmp_path, kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        write_synthetic_mrbrains18(tmp_path, n_subjects=2, spacing=SPACING, **kwargs)
    assert not (tmp_path / "training").exists()


def test_synthesize_writes_the_distinct_arm(arms, tmp_path):
    alike, _ = arms
    output = tmp_path / "data"
    code = main(["synthesize", "--dataset", "mrbrains18", "--output_dir", str(output), "--n_subjects", "2",
                 "--spacing", "[4.0,4.0,6.0]", "--arm", "distinct", "--distinct_subjects", "4"])  # fmt: skip

    assert code == 0
    assert INFARCT in _load(output, "4", "segm.nii.gz")  # a lone number is a subject ID, not a count
    assert _same_files(output, alike, "1")


@pytest.mark.parametrize(
    ("dataset", "options", "problem"),
    [
        ("mrbrains18", ["--arm", "outlier"], "unknown arm 'outlier'"),
        ("mrbrains18", ["--arm", "distinct", "--distinct_subjects", "1,9"], "distinct_subjects ['9'] are not among"),
        ("mrbrains18", ["--arm", "distinct", "--distinct_subjects", "1", "--n_distinct", "1"], "not both"),
        ("mrbrains18", ["--arm", "distinct", "--n_distinct", "3"], "count must be in 1..2, got 3"),
        ("tissuemnist", ["--arm", "distinct"], "are for mrbrains18, not 'tissuemnist'"),
    ],
)
def test_synthesize_rejects_bad_arm_options_with_exit_code_2(tmp_path, capsys, dataset, options, problem):
    args = ["synthesize", "--dataset", dataset, "--output_dir", str(tmp_path), "--n_subjects", "2", *options]

    assert main(args) == 2
    assert problem in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
