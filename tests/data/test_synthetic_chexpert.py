"""Tests for the synthetic CheXpert-like writer: exact layout, label statistics, determinism, visible findings and the
difficulty settings (cue strength, label noise, prevalence per sex)."""

from __future__ import annotations

import csv
import re
import time

import numpy as np
import pytest
from PIL import Image

from medunlearn_monai.data.chexpert import COMPETITION_TASKS, load_chexpert_items
from medunlearn_monai.data.synthetic import write_synthetic_chexpert

HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,"
    "Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices"
)
SMALL = {"n_patients": 12, "size": 32, "n_valid_patients": 3}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic_chexpert(tmp_path_factory.mktemp("synthetic") / "CheXpert-v1.0-small", **SMALL)


def _rows(root, split):
    with open(root / f"{split}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _files(root):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_writes_exact_chexpert_layout(root):
    assert (root / "train.csv").read_text().splitlines()[0] == HEADER
    assert (root / "valid.csv").read_text().splitlines()[0] == HEADER
    rows = {split: _rows(root, split) for split in ("train", "valid")}
    listed = sorted(row["Path"].removeprefix("CheXpert-v1.0-small/") for split in rows for row in rows[split])
    assert _files(root) == sorted([*listed, "train.csv", "valid.csv"])  # no temp file, nothing unlisted
    pattern = r"CheXpert-v1\.0-small/(train|valid)/patient\d{5}/study\d+/view(1_frontal|2_lateral)\.jpg"
    for split, split_rows in rows.items():
        for row in split_rows:
            assert re.fullmatch(pattern, row["Path"]) and row["Path"].split("/")[1] == split
            lateral = row["Path"].endswith("view2_lateral.jpg")
            assert row["Frontal/Lateral"] == ("Lateral" if lateral else "Frontal")
            assert row["AP/PA"] in (("",) if lateral else ("AP", "PA"))
            assert row["Sex"] in ("Female", "Male") and 18 <= int(row["Age"]) <= 90
            assert {row[name] for name in HEADER.split(",")[5:]} <= {"1.0", "0.0", "-1.0", ""}
            image = Image.open(root / row["Path"].split("/", 1)[1])
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (32, 32))
    patients = {split: {row["Path"].split("/")[2] for row in rows[split]} for split in rows}
    assert len(patients["train"]) == 12 and len(patients["valid"]) == 3
    assert not patients["train"] & patients["valid"]
    studies = {row["Path"].rsplit("/", 1)[0] for row in rows["train"]}
    assert len(studies) > 12 and all(int(row["Path"].split("/")[3][5:]) <= 3 for row in rows["train"])
    assert any(row["Frontal/Lateral"] == "Lateral" for row in rows["train"])
    assert {row["Sex"] for row in rows["train"]} == {"Female", "Male"}
    assert all({row[name] for name in HEADER.split(",")[5:]} <= {"1.0", "0.0"} for row in rows["valid"])
    load_chexpert_items(root, frontal_only=False)  # the reader accepts every row


def test_label_statistics(root):
    rows = _rows(root, "train")
    for task in COMPETITION_TASKS:
        values = [row[task] for row in rows]
        assert "1.0" in values and ("0.0" in values or "" in values), task
    values = [row[name] for row in rows for name in HEADER.split(",")[6:]]
    assert "-1.0" in values and "" in values
    for row in rows:
        findings = [row[name] for name in HEADER.split(",")[6:-1]]  # Support Devices does not count
        assert row["No Finding"] == ("1.0" if set(findings) <= {"0.0", ""} else "")


def test_default_size_is_fast_and_uncertain_labels_are_a_few_percent(tmp_path):
    start = time.perf_counter()
    root = write_synthetic_chexpert(tmp_path / "CheXpert-v1.0-small")
    assert time.perf_counter() - start < 3.0
    rows = _rows(root, "train")
    assert Image.open(root / rows[0]["Path"].split("/", 1)[1]).size == (64, 64)
    assert len({row["Path"].split("/")[2] for row in rows}) == 60
    values = np.array([row[task] for row in rows for task in COMPETITION_TASKS])
    assert 0.02 < np.mean(values == "-1.0") < 0.12
    assert 0.2 < np.mean(values == "1.0") < 0.4
    assert 0.3 < np.mean([row["Sex"] == "Female" for row in rows]) < 0.7


def test_same_seed_writes_identical_files(tmp_path):
    first = write_synthetic_chexpert(tmp_path / "a" / "CheXpert-v1.0-small", seed=5, **SMALL)
    again = write_synthetic_chexpert(tmp_path / "b" / "CheXpert-v1.0-small", seed=5, **SMALL)
    other = write_synthetic_chexpert(tmp_path / "c" / "CheXpert-v1.0-small", seed=6, **SMALL)

    assert _files(first) == _files(again)
    assert all((first / name).read_bytes() == (again / name).read_bytes() for name in _files(first))
    assert (first / "train.csv").read_text() != (other / "train.csv").read_text()


def _region_difference(root, task: str, region: tuple[float, float, float, float]) -> float:
    """Mean gray level of a region in images labelled positive for ``task`` minus in those labelled negative."""
    items = load_chexpert_items(root, uncertainty="ignore")
    images = np.stack([np.asarray(Image.open(item["image"]), dtype=np.float64) for item in items])
    labels, known = np.stack([item["label"] for item in items]), np.stack([item["label_mask"] for item in items])
    side = images.shape[1] - 1
    x0, x1, y0, y1 = (round((value + 1) / 2 * side) for value in region)  # image coordinates in [-1, 1]
    means = images[:, y0 : y1 + 1, x0 : x1 + 1].mean(axis=(1, 2))
    column = COMPETITION_TASKS.index(task)
    positive = means[(labels[:, column] == 1) & (known[:, column] == 1)]
    negative = means[(labels[:, column] == 0) & (known[:, column] == 1)]
    return positive.mean() - negative.mean()


# Next to the heart (widened by Cardiomegaly) and a lung base (filled by Pleural Effusion).
REGIONS = {"Cardiomegaly": (0.3, 0.42, 0.15, 0.35), "Pleural Effusion": (0.25, 0.5, 0.38, 0.5)}


@pytest.mark.parametrize("task", REGIONS)
def test_findings_are_visible_and_scale_with_cue_strength(tmp_path, task):
    """Without training anything: the region is brighter in positive images, the more so the larger the cue."""
    exact = {**SMALL, "n_patients": 40, "label_noise": 0.0, "female_prevalence": 0.3, "male_prevalence": 0.3}
    difference = {
        cue: _region_difference(
            write_synthetic_chexpert(tmp_path / str(cue), cue_strength=cue, **exact), task, REGIONS[task]
        )
        for cue in (0.0, 0.35, 1.0)
    }
    assert abs(difference[0.0]) < 8, difference
    assert 10 < difference[0.35] < difference[1.0] - 10, difference
    assert difference[1.0] > 20, difference


LABELS = {"n_patients": 200, "size": 16, "n_valid_patients": 2, "female_prevalence": 0.5, "male_prevalence": 0.15}
DRAWN = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion", "Lung Lesion", "Pneumonia")
DRAWN += ("Pneumothorax", "Pleural Other", "Fracture", "Support Devices")


@pytest.fixture(scope="module")
def exact_labels(tmp_path_factory):
    return write_synthetic_chexpert(tmp_path_factory.mktemp("exact") / "CheXpert-v1.0-small", label_noise=0.0, **LABELS)


def test_label_noise_flips_the_requested_fraction_and_leaves_the_images(exact_labels, tmp_path):
    noisy = write_synthetic_chexpert(tmp_path / "CheXpert-v1.0-small", label_noise=0.2, **LABELS)
    assert _files(noisy) == _files(exact_labels)
    images = [name for name in _files(noisy) if name.endswith(".jpg")]
    assert all((noisy / name).read_bytes() == (exact_labels / name).read_bytes() for name in images)
    assert (noisy / "valid.csv").read_text() == (exact_labels / "valid.csv").read_text()
    rows = zip(_rows(exact_labels, "train"), _rows(noisy, "train"), strict=True)
    pairs = [(before[name], after[name]) for before, after in rows for name in DRAWN if before[name] != "-1.0"]
    flipped = [(before == "1.0") != (after == "1.0") for before, after in pairs]
    assert len(pairs) > 3000
    assert abs(np.mean(flipped) - 0.2) < 0.03


def test_prevalence_follows_sex(exact_labels):
    rows = _rows(exact_labels, "train")
    for sex, expected in (("Female", 0.5), ("Male", 0.15)):
        values = [row[task] for row in rows if row["Sex"] == sex for task in COMPETITION_TASKS]
        assert len(values) > 500
        assert abs(np.mean(np.isin(values, ["1.0", "-1.0"])) - expected - 0.07) < 0.05, sex  # 7 % uncertain


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("cue_strength", -0.1),
        ("cue_strength", 2.5),
        ("noise_std", -0.01),
        ("noise_std", float("nan")),
        ("label_noise", 0.5),
        ("label_noise", -0.1),
        ("female_prevalence", 1.0),
        ("male_prevalence", -0.2),
        ("male_prevalence", "0.3"),
    ],
)
def test_bad_difficulty_raises_before_writing(tmp_path, setting, value):
    with pytest.raises(ValueError, match=f"{setting} must be a number in"):
        write_synthetic_chexpert(tmp_path / "CheXpert-v1.0-small", **{setting: value})
    assert not (tmp_path / "CheXpert-v1.0-small").exists()
