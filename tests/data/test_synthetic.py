"""Tests for the synthetic TissueMNIST-like generator."""

from __future__ import annotations

import numpy as np

from medunlearn_monai.data.synthetic import N_CLASSES, write_synthetic_tissuemnist

SMALL = {"n_train": 400, "n_val": 80, "n_test": 160}


def _arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def test_writes_exact_medmnist_layout(tmp_path):
    path = write_synthetic_tissuemnist(tmp_path / "nested" / "tissuemnist.npz", **SMALL)

    assert path == tmp_path / "nested" / "tissuemnist.npz"
    assert [p.name for p in path.parent.iterdir()] == ["tissuemnist.npz"]  # no temp file left behind
    arrays = _arrays(path)
    assert sorted(arrays) == sorted(
        f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("images", "labels")
    )
    for split, n_images in (("train", 400), ("val", 80), ("test", 160)):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        assert images.shape == (n_images, 28, 28)
        assert images.dtype == np.uint8
        assert labels.shape == (n_images, 1)
        assert labels.dtype == np.uint8
        assert set(np.unique(labels)) <= set(range(N_CLASSES))


def test_default_size_has_balanced_classes_and_uses_the_intensity_range(tmp_path):
    arrays = _arrays(write_synthetic_tissuemnist(tmp_path / "tissuemnist.npz"))

    assert len(arrays["train_images"]) == 1000
    assert len(arrays["val_images"]) == 300
    assert len(arrays["test_images"]) == 1000
    counts = np.bincount(arrays["train_labels"][:, 0], minlength=N_CLASSES)
    assert len(counts) == N_CLASSES
    assert counts.min() >= 0.8 * 1000 / N_CLASSES
    assert counts.max() <= 1.2 * 1000 / N_CLASSES
    test_counts = np.bincount(arrays["test_labels"][:, 0], minlength=N_CLASSES)
    assert test_counts.min() > 0
    images = arrays["train_images"]
    assert images.min() < 30 and images.max() > 225
    assert 80 < images.mean() < 175


def test_class_signal_is_present(tmp_path):
    """A nearest-class-mean on the grating power spectrum beats chance by far, so the labels carry signal."""
    arrays = _arrays(write_synthetic_tissuemnist(tmp_path / "tissuemnist.npz", **SMALL))

    def spectra(images: np.ndarray) -> np.ndarray:
        centred = images.astype(np.float64) - images.mean(axis=(1, 2), keepdims=True)
        power = np.abs(np.fft.fft2(centred)) ** 2
        return (power / power.sum(axis=(1, 2), keepdims=True)).reshape(len(images), -1)

    train_x, test_x = spectra(arrays["train_images"]), spectra(arrays["test_images"])
    train_y, test_y = arrays["train_labels"][:, 0], arrays["test_labels"][:, 0]
    means = np.stack([train_x[train_y == k].mean(axis=0) for k in range(N_CLASSES)])
    predictions = np.argmin(((test_x[:, None, :] - means[None]) ** 2).sum(axis=-1), axis=1)
    assert (predictions == test_y).mean() > 2.5 / N_CLASSES


def test_same_seed_is_deterministic_and_seeds_differ(tmp_path):
    first = _arrays(write_synthetic_tissuemnist(tmp_path / "a" / "tissuemnist.npz", seed=3, **SMALL))
    again = _arrays(write_synthetic_tissuemnist(tmp_path / "b" / "tissuemnist.npz", seed=3, **SMALL))
    other = _arrays(write_synthetic_tissuemnist(tmp_path / "c" / "tissuemnist.npz", seed=4, **SMALL))

    for key, value in first.items():
        np.testing.assert_array_equal(value, again[key])
    assert not np.array_equal(first["train_images"], other["train_images"])
    assert not np.array_equal(first["train_labels"], other["train_labels"])


def test_overwrites_an_existing_file(tmp_path):
    path = tmp_path / "out" / "tissuemnist.npz"
    path.parent.mkdir()
    path.write_bytes(b"stale")

    write_synthetic_tissuemnist(path, size=64, **SMALL)

    arrays = _arrays(path)
    assert arrays["test_images"].shape == (160, 64, 64)
    assert [p.name for p in path.parent.iterdir()] == ["tissuemnist.npz"]
