"""Tests for the MedMNIST ``.npz`` reader."""

from __future__ import annotations

import numpy as np
import pytest

from medunlearn_monai.data.medmnist import MEDMNIST_SPLITS, MedMNISTFormatError, load_medmnist_items
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist


def _save(path, **arrays):
    np.savez_compressed(path, **arrays)
    return path


def _split_arrays(n_images: int = 4, image_shape=(28, 28), labels=None, dtype=np.uint8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in MEDMNIST_SPLITS:
        arrays[f"{split}_images"] = rng.integers(0, 256, (n_images, *image_shape)).astype(dtype)
        arrays[f"{split}_labels"] = rng.integers(0, 8, (n_images, 1)).astype(np.uint8) if labels is None else labels
    return arrays


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory):
    return write_synthetic_tissuemnist(
        tmp_path_factory.mktemp("medmnist") / "tissuemnist.npz", n_train=120, n_val=24, n_test=48
    )


def test_round_trips_the_synthetic_file(synthetic_file):
    with np.load(synthetic_file, allow_pickle=False) as archive:
        raw = {key: archive[key] for key in archive.files}

    for split, n_images in (("train", 120), ("val", 24), ("test", 48)):
        items = load_medmnist_items(synthetic_file, split)
        assert len(items) == n_images
        assert all(set(item) == {"image", "label", "subject"} for item in items)
        assert [item["subject"] for item in items] == [f"tissuemnist-{split}-{i:06d}" for i in range(n_images)]
        for index in (0, n_images - 1):
            item = items[index]
            assert item["image"].shape == (1, 28, 28)
            assert item["image"].dtype == np.uint8
            np.testing.assert_array_equal(item["image"][0], raw[f"{split}_images"][index])
            assert type(item["label"]) is int
            assert item["label"] == int(raw[f"{split}_labels"][index, 0])


def test_subject_ids_are_unique_stable_and_use_the_dataset_name(synthetic_file):
    subjects = [item["subject"] for split in MEDMNIST_SPLITS for item in load_medmnist_items(synthetic_file, split)]
    again = [item["subject"] for split in MEDMNIST_SPLITS for item in load_medmnist_items(synthetic_file, split)]
    assert len(set(subjects)) == len(subjects) == 120 + 24 + 48
    assert subjects == again

    named = load_medmnist_items(synthetic_file, "val", dataset_name="tissue")
    assert named[3]["subject"] == "tissue-val-000003"


def test_reads_rgb_64_as_channel_first(tmp_path):
    arrays = _split_arrays(n_images=3, image_shape=(64, 64, 3))
    path = _save(tmp_path / "pathmnist_64.npz", **arrays)

    items = load_medmnist_items(path, "test")

    assert len(items) == 3
    assert items[1]["image"].shape == (3, 64, 64)
    assert items[1]["image"].dtype == np.uint8
    np.testing.assert_array_equal(items[1]["image"], arrays["test_images"][1].transpose(2, 0, 1))
    assert items[1]["label"] == int(arrays["test_labels"][1, 0])
    assert items[0]["subject"] == "pathmnist_64-test-000000"


def test_multi_label_rows_become_int64_vectors(tmp_path):
    labels = np.array([[1, 0, 1], [0, 0, 0]], dtype=np.uint8)
    path = _save(tmp_path / "chestmnist.npz", **_split_arrays(n_images=2, labels=labels))

    items = load_medmnist_items(path, "train")

    assert items[0]["label"].dtype == np.int64
    np.testing.assert_array_equal(items[0]["label"], [1, 0, 1])
    np.testing.assert_array_equal(items[1]["label"], [0, 0, 0])


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_medmnist_items(missing, "train")


def test_unknown_split_is_rejected(synthetic_file):
    with pytest.raises(MedMNISTFormatError, match=r"Unknown MedMNIST split 'validation'"):
        load_medmnist_items(synthetic_file, "validation")


@pytest.mark.parametrize("content", [b"", b"this is not an npz archive", b"PK\x03\x04 truncated zip"])
def test_invalid_archive_is_rejected(tmp_path, content):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(MedMNISTFormatError, match=r"broken\.npz: not a valid \.npz archive"):
        load_medmnist_items(path, "train")


def test_single_npy_array_is_rejected(tmp_path):
    path = tmp_path / "single.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(MedMNISTFormatError, match="single .npy array"):
        load_medmnist_items(path, "train")


def test_missing_split_key_lists_the_keys_present(tmp_path):
    arrays = _split_arrays()
    del arrays["val_labels"]
    path = _save(tmp_path / "partial.npz", **arrays)

    with pytest.raises(MedMNISTFormatError) as excinfo:
        load_medmnist_items(path, "val")

    message = str(excinfo.value)
    assert "partial.npz" in message
    assert "['val_labels']" in message
    assert "keys present: ['test_images', 'test_labels', 'train_images', 'train_labels', 'val_images']" in message
    assert len(load_medmnist_items(path, "train")) == 4


def test_count_mismatch_is_rejected(tmp_path):
    arrays = _split_arrays()
    arrays["test_labels"] = arrays["test_labels"][:3]
    path = _save(tmp_path / "mismatch.npz", **arrays)

    with pytest.raises(MedMNISTFormatError, match="test_images has 4 images but test_labels has 3 labels"):
        load_medmnist_items(path, "test")


@pytest.mark.parametrize(
    ("image_shape", "problem"),
    [
        ((32, 32), "unsupported train_images size 32x32"),
        ((28, 64), "unsupported train_images size 28x64"),
        ((28, 28, 4), r"unsupported train_images shape \(4, 28, 28, 4\)"),
        ((1, 28, 28, 3), r"unsupported train_images shape \(4, 1, 28, 28, 3\)"),
    ],
)
def test_unsupported_image_shape_is_rejected(tmp_path, image_shape, problem):
    path = _save(tmp_path / "shape.npz", **_split_arrays(image_shape=image_shape))
    with pytest.raises(MedMNISTFormatError, match=problem):
        load_medmnist_items(path, "train")


def test_non_uint8_images_are_rejected(tmp_path):
    path = _save(tmp_path / "float.npz", **_split_arrays(dtype=np.float32))
    with pytest.raises(MedMNISTFormatError, match="train_images must be uint8, got dtype float32"):
        load_medmnist_items(path, "train")


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (np.zeros(4, dtype=np.uint8), r"unsupported train_labels shape \(4,\)"),
        (np.zeros((4, 1), dtype=np.float32), "train_labels must be integers, got dtype float32"),
    ],
)
def test_malformed_labels_are_rejected(tmp_path, labels, problem):
    path = _save(tmp_path / "labels.npz", **_split_arrays(labels=labels))
    with pytest.raises(MedMNISTFormatError, match=problem):
        load_medmnist_items(path, "train")
