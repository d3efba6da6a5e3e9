"""Tests for the CheXpert reader, image validation, patient-level split and attribute-based subject selection."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import Image

from medunlearn_monai.data.chexpert import (
    COMPETITION_TASKS,
    OBSERVATIONS,
    REQUIRED_COLUMNS,
    UNCERTAINTY_POLICIES,
    CheXpertFormatError,
    ignored_as_nan,
    load_chexpert_items,
    patient_split,
    subjects_with,
    validate_images,
)
from medunlearn_monai.data.synthetic import write_synthetic_chexpert

HEADER = [*REQUIRED_COLUMNS, *OBSERVATIONS]
FRONTAL = "train/patient00001/study1/view1_frontal.jpg"


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_synthetic_chexpert(
        tmp_path_factory.mktemp("chexpert") / "CheXpert-v1.0-small", n_patients=12, size=32, n_valid_patients=3
    )


def _jpeg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(path, format="JPEG")
    return path


def _csv(root, rows, header=HEADER, split="train", images=True):
    """Write ``<root>/<split>.csv`` from rows given as {column: value} (missing columns blank) and their images."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    for row in rows:
        row = {"Sex": "Female", "Age": "40", "Frontal/Lateral": "Frontal", "AP/PA": "AP", **row}
        lines.append(",".join(row.get(column, "") for column in header))
        if images:
            _jpeg(root / re.sub(r"^CheXpert-v1\.0-small/", "", row["Path"]))
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_reads_synthetic_items(synthetic_root):
    items = load_chexpert_items(synthetic_root)
    everything = load_chexpert_items(synthetic_root, frontal_only=False)

    assert 12 <= len(items) < len(everything)  # the tree holds some lateral views, dropped by default
    assert all(item["image"].endswith("view1_frontal.jpg") for item in items)
    assert any(item["image"].endswith("view2_lateral.jpg") for item in everything)
    for item in everything:
        assert os.path.isabs(item["image"]) and os.path.isfile(item["image"])
        folder = os.path.dirname(item["image"])
        assert (item["subject"], item["study"]) == (os.path.basename(os.path.dirname(folder)), os.path.basename(folder))
        assert re.fullmatch(r"patient\d{5}", item["subject"]) and re.fullmatch(r"study\d", item["study"])
        assert item["label"].dtype == item["label_mask"].dtype == np.float32
        assert item["label"].shape == item["label_mask"].shape == (len(COMPETITION_TASKS),)
        assert set(np.unique(item["label"])) <= {0.0, 1.0}
        assert np.all(item["label_mask"] == 1.0)  # "ones" policy
        assert item["sex"] in ("Female", "Male") and 18 <= item["age"] <= 90
    assert len({item["subject"] for item in items}) == 12
    validate_images(everything)

    single = load_chexpert_items(synthetic_root, observations="Cardiomegaly")
    assert [item["label"].shape for item in single] == [(1,)] * len(items)
    np.testing.assert_array_equal([item["label"][0] for item in single], [item["label"][1] for item in items])
    valid = load_chexpert_items(synthetic_root, split="valid", observations=OBSERVATIONS)
    assert valid[0]["label"].shape == (14,)
    assert not {item["subject"] for item in valid} & {item["subject"] for item in items}


def test_uncertainty_policies_and_blanks(tmp_path):
    row = {"Path": FRONTAL, "Atelectasis": "0.0", "Cardiomegaly": "1.0", "Edema": "-1.0", "Pleural Effusion": "-1"}
    root = _csv(tmp_path, [row])
    expected = {  # Atelectasis 0, Cardiomegaly 1, Consolidation blank, Edema -1, Pleural Effusion -1
        "ones": ([0, 1, 0, 1, 1], [1, 1, 1, 1, 1]),
        "zeros": ([0, 1, 0, 0, 0], [1, 1, 1, 1, 1]),
        "ignore": ([0, 1, 0, 0, 0], [1, 1, 1, 0, 0]),
    }
    assert set(expected) == set(UNCERTAINTY_POLICIES)
    for policy, (label, mask) in expected.items():
        (item,) = load_chexpert_items(root, uncertainty=policy)
        np.testing.assert_array_equal(item["label"], label)
        np.testing.assert_array_equal(item["label_mask"], mask)
    with pytest.raises(ValueError, match="uncertainty policy"):
        load_chexpert_items(root, uncertainty="maybe")


def test_paths_with_and_without_the_dataset_prefix(tmp_path):
    other = "train/patient00002/study3/view1_frontal.jpg"
    root = _csv(tmp_path / "renamed", [{"Path": f"CheXpert-v1.0-small/{FRONTAL}"}, {"Path": other, "Sex": ""}])

    items = load_chexpert_items(root)

    assert [item["image"] for item in items] == [str(root / FRONTAL), str(root / other)]
    assert [(item["subject"], item["study"], item["sex"]) for item in items] == [
        ("patient00001", "study1", "Female"),
        ("patient00002", "study3", "Unknown"),
    ]


def test_missing_csv_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="valid.csv"):
        load_chexpert_items(tmp_path, split="valid")
    with pytest.raises(ValueError, match=r"Unknown CheXpert observation 'Fibrosis'.*Pleural Effusion"):
        load_chexpert_items(tmp_path, observations=["Edema", "Fibrosis"])
    with pytest.raises(ValueError, match="split"):
        load_chexpert_items(tmp_path, split="test")


def test_missing_columns_are_named(tmp_path):
    header = [name for name in HEADER if name not in ("Age", "Edema")]
    root = _csv(tmp_path, [{"Path": FRONTAL}], header=header)

    with pytest.raises(CheXpertFormatError, match=r"train\.csv: row 1: missing column\(s\) \['Age', 'Edema'\]"):
        load_chexpert_items(root)
    with pytest.raises(CheXpertFormatError, match=r"\['Age'\]"):
        load_chexpert_items(root, observations="Cardiomegaly")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"Path": "train/p00001/study1/view1_frontal.jpg"}, r"row 3: Path .* does not match"),
        ({"Path": "patient00001/study1/view1_frontal.jpg"}, r"row 3: Path .* does not match"),
        ({"Edema": "2.0"}, r"row 3: Edema is '2.0'"),
        ({"Cardiomegaly": "yes"}, r"row 3: Cardiomegaly is 'yes'"),
        ({"Age": "forty"}, r"row 3: Age is 'forty'"),
        ({"Age": ""}, r"row 3: Age is ''"),
        ({"Frontal/Lateral": "Oblique"}, r"row 3: Frontal/Lateral is 'Oblique'"),
        ({"Sex": "F"}, r"row 3: Sex is 'F'"),
    ],
)
def test_malformed_rows_are_named_by_row_number(tmp_path, row, message):
    root = _csv(tmp_path, [{"Path": FRONTAL}, {"Path": "train/patient00002/study1/view1_frontal.jpg", **row}])

    with pytest.raises(CheXpertFormatError, match=re.escape(str(root / "train.csv")) + ": " + message):
        load_chexpert_items(root)


def test_missing_image_is_named_with_its_row(tmp_path):
    root = _csv(tmp_path, [{"Path": FRONTAL}])
    _csv(tmp_path, [{"Path": FRONTAL}, {"Path": "train/patient00009/study2/view1_frontal.jpg"}], images=False)

    missing = root / "train/patient00009/study2/view1_frontal.jpg"
    with pytest.raises(CheXpertFormatError, match=f"row 3: image {re.escape(str(missing))} not found"):
        load_chexpert_items(root)


def test_validate_images_names_undecodable_files(tmp_path):
    good = _jpeg(tmp_path / "good.jpg")
    large = tmp_path / "large.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(large, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(large.read_bytes()[: large.stat().st_size // 2])
    text = tmp_path / "text.jpg"
    text.write_text("Path,Sex,Age\n")

    validate_images([{"image": str(good)}, {"image": str(large)}])
    for bad in (truncated, text):
        with pytest.raises(CheXpertFormatError, match=re.escape(str(bad))):
            validate_images([{"image": str(good)}, {"image": str(bad)}])


def test_patient_split_is_by_patient_and_deterministic(synthetic_root):
    items = load_chexpert_items(synthetic_root, frontal_only=False)

    train, val, test = patient_split(items, seed=3)

    subjects = [{item["subject"] for item in split} for split in (train, val, test)]
    assert all(subjects) and not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert sorted(map(id, train + val + test)) == sorted(map(id, items))
    assert (len(subjects[1]), len(subjects[2])) == (1, 2)  # round(0.1 * 12), round(0.2 * 12)
    ids = [[id(item) for item in split] for split in (train, val, test)]
    assert [[id(item) for item in split] for split in patient_split(items, seed=3)] == ids
    assert [id(item) for item in patient_split(items[::-1], seed=3)[2]] == ids[2][::-1]  # order of items is kept
    assert any([id(item) for item in patient_split(items, seed=seed)[2]] != ids[2] for seed in range(4, 8))
    patients = sorted({item["subject"] for item in items})
    assert all(patient_split([item for item in items if item["subject"] in patients[:3]]))
    with pytest.raises(ValueError, match="at least 3 patients, got 2"):
        patient_split([item for item in items if item["subject"] in patients[:2]])
    with pytest.raises(ValueError, match="Fractions"):
        patient_split(items, val_fraction=0.5, test_fraction=0.5)


def test_subjects_with_attributes(synthetic_root):
    items = load_chexpert_items(synthetic_root)

    women = subjects_with(items, sex="Female")

    assert women == sorted({item["subject"] for item in items if item["sex"] == "Female"})
    assert women and len(women) < 12
    assert set(women).isdisjoint(subjects_with(items, sex="Male"))
    old = subjects_with(items, sex="Female", age=lambda age: age >= 50)
    assert set(old) <= set(women)
    assert old == sorted({item["subject"] for item in items if item["sex"] == "Female" and item["age"] >= 50})
    with pytest.raises(ValueError, match="weight"):
        subjects_with(items, weight=70)


def test_ignored_labels_become_nan_and_known_ones_stay():
    item = {"label": np.array([1.0, 0.0, 0.0], np.float32), "label_mask": np.array([1.0, 0.0, 1.0], np.float32)}
    marked = ignored_as_nan(item)
    assert marked["label"][0] == 1.0 and np.isnan(marked["label"][1]) and marked["label"][2] == 0.0
    assert not np.isnan(item["label"]).any()
