"""Tests for the MRBrainS18 / MedicalNet readers and label merges."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import MapLabelValued

from medunlearn_monai.data.mrbrains18 import (
    LABEL_MERGES,
    LABEL_NAMES,
    MODALITIES,
    MRBrainS18FormatError,
    check_modalities,
    class_names,
    find_medicalnet_subjects,
    find_mrbrains18_subjects,
    hold_out,
    label_merge,
    num_classes,
    validate_subjects,
)
from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18

SHAPE = (16, 16, 12)  # big enough that half of a gzip file still holds the header
REGISTERED = ("reg_T1.nii.gz", "reg_IR.nii.gz", "FLAIR.nii.gz")


def _volume(path, shape=SHAPE, data=None, dtype=np.float32):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(0).random(shape).astype(dtype) if data is None else np.asarray(data, dtype=dtype)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def _labels(shape=SHAPE) -> np.ndarray:
    return (np.arange(np.prod(shape)) % len(LABEL_NAMES)).reshape(shape)


def _subject(training, name, files=REGISTERED, shape=SHAPE, label=True):
    """Write a tiny subject folder with the given image files and (optionally) a segmentation holding 0..10."""
    for file_name in files:
        _volume(training / name / "pre" / file_name, shape)
    if label:
        _volume(training / name / "segm.nii.gz", shape, data=_labels(shape), dtype=np.uint8)
    return training / name


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mrbrains18")
    write_synthetic_mrbrains18(root, n_subjects=3, spacing=(4.0, 4.0, 6.0), subject_ids=["1", "14", "070"])
    return root


def test_finds_synthetic_subjects_sorted_by_name_with_modalities_in_order(synthetic_root):
    items = find_mrbrains18_subjects(synthetic_root)

    assert [item["subject"] for item in items] == ["070", "1", "14"]
    training = synthetic_root / "training"
    for item in items:
        folder = training / item["subject"]
        assert item == {
            "image": [str(folder / "pre" / name) for name in REGISTERED],
            "label": str(folder / "segm.nii.gz"),
            "subject": item["subject"],
        }
    validate_subjects(items)

    reordered = find_mrbrains18_subjects(synthetic_root, modalities=("FLAIR", "T1"))
    assert reordered[0]["image"] == [str(training / "070" / "pre" / name) for name in ("FLAIR.nii.gz", "reg_T1.nii.gz")]
    single = find_mrbrains18_subjects(synthetic_root, modalities="IR")
    assert single[2]["image"] == [str(training / "14" / "pre" / "reg_IR.nii.gz")]


def test_root_may_be_the_training_folder(synthetic_root):
    assert find_mrbrains18_subjects(synthetic_root / "training") == find_mrbrains18_subjects(synthetic_root)


def test_unregistered_names_are_a_fallback_and_reg_is_preferred(tmp_path):
    training = tmp_path / "training"
    plain = _subject(training, "5", files=("T1.nii.gz", "IR.nii.gz", "FLAIR.nii.gz"))
    both = _subject(training, "7", files=(*REGISTERED, "T1.nii.gz", "IR.nii.gz"))

    items = find_mrbrains18_subjects(tmp_path)

    assert items[0]["image"] == [str(plain / "pre" / name) for name in ("T1.nii.gz", "IR.nii.gz", "FLAIR.nii.gz")]
    assert items[1]["image"] == [str(both / "pre" / name) for name in REGISTERED]


def test_hidden_and_zip_metadata_folders_are_skipped(tmp_path):
    training = tmp_path / "training"
    _subject(training, "1")
    (training / ".staging-4-123" / "pre").mkdir(parents=True)
    (training / "__MACOSX").mkdir()
    (training / "notes.txt").write_text("not a subject")

    assert [item["subject"] for item in find_mrbrains18_subjects(tmp_path)] == ["1"]


def test_missing_modality_names_the_expected_file(tmp_path):
    _subject(tmp_path / "training", "1")
    _subject(tmp_path / "training", "4", files=("reg_T1.nii.gz", "FLAIR.nii.gz"))

    expected = f"{tmp_path / 'training' / '4' / 'pre' / 'reg_IR.nii.gz'} (or IR.nii.gz)"
    with pytest.raises(MRBrainS18FormatError, match=re.escape(expected)):
        find_mrbrains18_subjects(tmp_path)
    assert len(find_mrbrains18_subjects(tmp_path, modalities=("T1", "FLAIR"))) == 2


def test_missing_segmentation_names_the_file(tmp_path):
    _subject(tmp_path / "training", "14", label=False)
    with pytest.raises(MRBrainS18FormatError, match=re.escape(str(tmp_path / "training" / "14" / "segm.nii.gz"))):
        find_mrbrains18_subjects(tmp_path)


def test_missing_root_and_empty_training_folder_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        find_mrbrains18_subjects(tmp_path / "absent")
    (tmp_path / "training").mkdir()
    with pytest.raises(MRBrainS18FormatError, match=re.escape(f"{tmp_path / 'training'}: no subject folders")):
        find_mrbrains18_subjects(tmp_path)


@pytest.mark.parametrize("modalities", [("T1", "T2"), ("t1",), (), ("T1", "T1")])
def test_invalid_modality_choices_list_the_valid_names(tmp_path, modalities):
    _subject(tmp_path / "training", "1")
    with pytest.raises(ValueError, match=re.escape(str(MODALITIES))):
        find_mrbrains18_subjects(tmp_path, modalities=modalities)


def test_check_modalities_keeps_the_order():
    assert check_modalities(["FLAIR", "IR"]) == ("FLAIR", "IR")
    assert check_modalities("T1") == ("T1",)


def test_medicalnet_flat_layout_from_a_list_file(tmp_path):
    root = tmp_path / "MRBrainS18"
    for subject in ("070", "1"):
        _volume(root / "images" / f"{subject}.nii.gz")
        _volume(root / "labels" / f"{subject}.nii.gz", data=_labels(), dtype=np.uint8)
    (root / "train.txt").write_text("images/070.nii.gz labels/070.nii.gz\n\n  \nimages/1.nii.gz\tlabels/1.nii.gz\n")

    items = find_medicalnet_subjects(root, "train.txt")  # not in the working folder: looked up under root

    assert items == [
        {"image": [str(root / "images" / f"{s}.nii.gz")], "label": str(root / "labels" / f"{s}.nii.gz"), "subject": s}
        for s in ("070", "1")
    ]
    assert find_medicalnet_subjects(root, root / "train.txt") == items
    validate_subjects(items)


def test_medicalnet_errors_name_the_file_and_line(tmp_path):
    _volume(tmp_path / "images" / "1.nii.gz")
    _volume(tmp_path / "labels" / "1.nii.gz", data=_labels(), dtype=np.uint8)
    list_file = tmp_path / "train.txt"

    with pytest.raises(FileNotFoundError, match="missing.txt"):
        find_medicalnet_subjects(tmp_path, "missing.txt")
    list_file.write_text("images/1.nii.gz labels/1.nii.gz\n\nimages/1.nii.gz\n")
    with pytest.raises(MRBrainS18FormatError, match=re.escape(f"{list_file}: line 3: expected")):
        find_medicalnet_subjects(tmp_path, list_file)
    list_file.write_text("images/1.nii.gz labels/4.nii.gz\n")
    with pytest.raises(MRBrainS18FormatError, match=re.escape(f"{tmp_path / 'labels' / '4.nii.gz'}: listed in")):
        find_medicalnet_subjects(tmp_path, list_file)


def test_truncated_gzip_is_caught_by_reading_the_voxels(tmp_path):
    folder = _subject(tmp_path / "training", "4")
    flair = folder / "pre" / "FLAIR.nii.gz"
    content = flair.read_bytes()
    flair.write_bytes(content[: len(content) // 2])
    assert nib.load(flair).shape == SHAPE  # the header still reads; only the voxel data end early

    items = find_mrbrains18_subjects(tmp_path)
    with pytest.raises(MRBrainS18FormatError, match=re.escape(f"{flair}: not a readable NIfTI volume")):
        validate_subjects(items)


def test_non_nifti_file_is_rejected(tmp_path):
    folder = _subject(tmp_path / "training", "4")
    (folder / "segm.nii.gz").write_text("not an image")
    with pytest.raises(MRBrainS18FormatError, match=re.escape(f"{folder / 'segm.nii.gz'}: not a readable")):
        validate_subjects(find_mrbrains18_subjects(tmp_path))


def test_label_shape_must_match_the_image(tmp_path):
    folder = _subject(tmp_path / "training", "5")
    _volume(folder / "segm.nii.gz", shape=(16, 16, 11), data=_labels((16, 16, 11)), dtype=np.uint8)
    with pytest.raises(MRBrainS18FormatError, match=re.escape(f"{folder / 'segm.nii.gz'}: label shape (16, 16, 11)")):
        validate_subjects(find_mrbrains18_subjects(tmp_path))


def test_modality_shapes_must_match(tmp_path):
    folder = _subject(tmp_path / "training", "7")
    _volume(folder / "pre" / "reg_IR.nii.gz", shape=(16, 16, 13))
    with pytest.raises(
        MRBrainS18FormatError, match=re.escape(f"{folder / 'pre' / 'reg_IR.nii.gz'}: shape (16, 16, 13)")
    ):
        validate_subjects(find_mrbrains18_subjects(tmp_path))


@pytest.mark.parametrize(("value", "dtype"), [(12, np.uint8), (1.5, np.float32), (-1, np.int16)])
def test_label_values_must_be_mrbrains18_labels(tmp_path, value, dtype):
    folder = _subject(tmp_path / "training", "148")
    labels = _labels().astype(dtype)
    labels[0, 0, 0] = value
    _volume(folder / "segm.nii.gz", data=labels, dtype=dtype)
    with pytest.raises(MRBrainS18FormatError, match=re.escape(f"{folder / 'segm.nii.gz'}: label values [{value}]")):
        validate_subjects(find_mrbrains18_subjects(tmp_path))


def test_float_labels_holding_integers_are_accepted(tmp_path):
    folder = _subject(tmp_path / "training", "1")
    _volume(folder / "segm.nii.gz", data=_labels(), dtype=np.float32)
    validate_subjects(find_mrbrains18_subjects(tmp_path))


def test_volumes_must_be_3d(tmp_path):
    folder = _subject(tmp_path / "training", "1")
    _volume(folder / "pre" / "reg_T1.nii.gz", shape=(*SHAPE, 2))
    with pytest.raises(MRBrainS18FormatError, match="expected a 3D volume"):
        validate_subjects(find_mrbrains18_subjects(tmp_path))


def test_label_merges_map_every_label():
    all_labels = np.arange(len(LABEL_NAMES), dtype=np.uint8)[None, :, None, None]
    expected = {
        "binary": [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        "challenge": [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0],
    }
    for name in LABEL_MERGES:
        orig, target = label_merge(name)
        merged = MapLabelValued(keys="label", orig_labels=orig, target_labels=target)({"label": all_labels.copy()})
        np.testing.assert_array_equal(np.asarray(merged["label"]).ravel(), expected[name])
        assert len(class_names(name)) == num_classes(name) == max(target) + 1
    assert label_merge() == label_merge("binary")
    assert class_names("binary") == ["background", "brain tissue"]
    assert class_names("challenge") == list(LABEL_NAMES[:9])
    assert LABEL_NAMES[4] == "white matter lesions" and LABEL_NAMES[10] == "other"


@pytest.mark.parametrize("function", [label_merge, class_names, num_classes])
def test_unknown_merge_lists_the_valid_names(function):
    with pytest.raises(ValueError, match=re.escape("'tissue'; expected one of ('binary', 'challenge')")):
        function("tissue")


def test_scans_without_segmentation_are_listed_for_inference_only(tmp_path):
    _subject(tmp_path / "training", "new", label=False)
    with pytest.raises(MRBrainS18FormatError, match="segm.nii.gz"):
        find_mrbrains18_subjects(tmp_path)
    (item,) = find_mrbrains18_subjects(tmp_path, require_label=False)
    assert "label" not in item and len(item["image"]) == 3


def test_hold_out_splits_by_subject_and_names_unknown_entries_by_position():
    items = [{"subject": name} for name in ("070", "1", "14", "148")]
    train, test = hold_out(items, ["148", "1"])
    assert [item["subject"] for item in train] == ["070", "14"]
    assert [item["subject"] for item in test] == ["1", "148"]
    with pytest.raises(ValueError, match="test_subjects is empty"):
        hold_out(items, [])
    with pytest.raises(ValueError, match="entries #2 are not subjects") as error:
        hold_out(items, ["148", "999"])
    assert "999" not in str(error.value)
    with pytest.raises(ValueError, match="every subject"):
        hold_out(items, ["070", "1", "14", "148"])
