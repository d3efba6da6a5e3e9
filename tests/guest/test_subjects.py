"""Subject IDs read from a guest bundle's items: the image file's name by default, an item key otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from medunlearn_monai.guest.subjects import GuestDataError, subject_from_file_name, subject_id, with_subjects


@pytest.mark.parametrize(
    ("path", "subject"),
    [
        ("/data/Task09_Spleen/imagesTr/spleen_10.nii.gz", "spleen_10"),
        (Path("train_data/img03.nii"), "img03"),
        ("scans/case.7.png", "case.7"),
        ("archive/patient-2.npy.xz", "patient-2"),
    ],
)
def test_default_subject_is_the_image_file_name_without_its_extension(path, subject):
    assert subject_from_file_name(path) == subject
    assert subject_id({"image": path, "label": 0}) == subject


def test_subject_key_reads_the_subject_from_an_item_key():
    items = [{"image": "a/1.nii.gz", "patient_id": 17}, {"image": "a/2.nii.gz", "patient_id": " 17 "}]
    assert [item["subject"] for item in with_subjects(items, "patient_id")] == ["17", "17"]
    assert "subject" not in items[0]  # copies: the guest's own list is left as it is


def test_missing_subject_key_names_the_item_and_its_keys_but_no_value():
    items = [{"image": "a/1.nii.gz", "patient": "P-001"}, {"image": "a/2.nii.gz", "label": 1}]
    with pytest.raises(
        GuestDataError, match=r"item #1 .* no key 'patient_id' \(--subject_key\); its keys are \['image', 'patient'\]"
    ) as error:
        with_subjects(items, "patient_id")
    assert "P-001" not in str(error.value)


@pytest.mark.parametrize(
    ("item", "reason"),
    [({"image": ["t1.nii.gz", "t2.nii.gz"]}, "an 'image' that is a list"), ({"label": 1}, "no 'image' key")],
)
def test_an_item_without_one_image_file_needs_a_subject_key(item, reason):
    with pytest.raises(GuestDataError, match=f"item #1 .*has {reason}.*pass --subject_key KEY"):
        with_subjects([item])


@pytest.mark.parametrize("items", ["data.json", {"image": "a.nii.gz"}, 3])
def test_items_must_be_a_list_of_dicts(items):
    with pytest.raises(GuestDataError, match="must be a list of item dicts"):
        with_subjects(items)


def test_empty_subject_is_refused():
    with pytest.raises(GuestDataError, match="item #2 .* has an empty 'patient'"):
        with_subjects([{"patient": "a"}, {"patient": "  "}], "patient")
