"""Linear probe recovery: known answers on synthetic features, and a scrambled head caught through the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd

import medunlearn_monai.evaluation.classification as evaluation_module
from medunlearn_monai.evaluation import ClassificationEvaluation
from medunlearn_monai.metrics.probe import LayerInputs, probe_accuracy
from medunlearn_monai.records import read_item_scores, write_json
from medunlearn_monai.sisa import ShardEnsemble

CLASSES = 4
SIDE = 8


def clustered(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Features whose class shifts one coordinate by 10 noise standard deviations: linearly separable."""
    labels = rng.integers(0, CLASSES, count)
    features = rng.normal(size=(count, 16))
    features[np.arange(count), labels] += 10.0
    return features, labels


def test_separable_classes_are_fully_recovered():
    rng = np.random.default_rng(0)
    assert probe_accuracy(clustered(400, rng), {"forget": clustered(200, rng)}) == {"forget": 1.0}


def test_features_independent_of_the_labels_give_chance_accuracy():
    rng = np.random.default_rng(1)
    fit = (rng.normal(size=(1000, 64)), rng.integers(0, CLASSES, 1000))
    scored = {"forget": (rng.normal(size=(2000, 64)), rng.integers(0, CLASSES, 2000))}
    # Chance is 1/4; the standard error of 2000 items is 0.01, so 0.06 is far outside noise but far below 1.
    assert probe_accuracy(fit, scored, seed=3)["forget"] == pytest.approx(1 / CLASSES, abs=0.06)


def test_multilabel_probes_each_observation_on_its_known_labels_and_averages():
    rng = np.random.default_rng(2)
    sign = rng.integers(0, 2, 300).astype(float)
    features = np.stack([10.0 * sign, -10.0 * sign], axis=1) + rng.normal(size=(300, 2))
    fit_labels = np.stack([sign, np.where(sign == 1, 1.0, np.nan), sign], axis=1)  # observation 1: one known value
    forget_labels = np.stack([sign, sign, 1 - sign], axis=1)  # observation 2 is flipped: the probe gets it all wrong
    forget_labels[::3, 0] = np.nan
    accuracies = probe_accuracy((features, fit_labels), {"forget": (features, forget_labels)}, multilabel=True)
    assert accuracies == {"forget": pytest.approx(0.5)}  # mean of observation 0 (1.0) and 2 (0.0); 1 left out


class TinyClassifier(torch.nn.Module):
    """A two-layer perceptron whose last layer is ``fc``, like MONAI's ResNet."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIDE * SIDE, 16), torch.nn.ReLU())
        self.fc = torch.nn.Linear(16, CLASSES)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(image))


def quadrant_items(prefix: str, count: int, generator: torch.Generator) -> list[dict]:
    """Noisy images whose class is the quadrant that is bright."""
    items = []
    for index in range(count):
        label = index % CLASSES
        image = 0.3 * torch.randn(1, SIDE, SIDE, generator=generator)
        row, column = divmod(label, 2)
        image[:, row * 4 : row * 4 + 4, column * 4 : column * 4 + 4] += 1.0
        items.append({"image": image, "label": label, "subject": f"{prefix}-{index}"})
    return items


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    generator = torch.Generator().manual_seed(0)
    return {split: quadrant_items(split, 80, generator) for split in ("retain", "forget", "test", "val")}


@pytest.fixture(scope="module")
def trained(splits) -> TinyClassifier:
    torch.manual_seed(0)
    network = TinyClassifier()
    images = torch.stack([item["image"] for item in splits["retain"]])
    labels = torch.tensor([item["label"] for item in splits["retain"]])
    optimiser = torch.optim.Adam(network.parameters(), lr=0.05)
    for _ in range(25):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(network(images), labels).backward()
        optimiser.step()
    return network.eval()


def evaluation(network: torch.nn.Module, splits: dict, tmp_path, probe: bool) -> ClassificationEvaluation:
    model = tmp_path / f"model_{probe}.pt"
    model.write_bytes(b"weights")
    write_json(model.with_suffix(".json"), {"workflow": "train", "seconds": 1.0, "samples_per_second": 1.0})
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(splits["test"], batch_size=16),
        network=network,
        postprocessing=Activationsd(keys="pred", softmax=True),
    )
    loaders = {split: DataLoader(splits[split], batch_size=16) for split in ("retain", "forget", "test")}
    probe_loader = DataLoader(splits["val"], batch_size=16) if probe else None
    return ClassificationEvaluation(evaluator, loaders, model, salt=b"salt", probe_loader=probe_loader)


def test_a_scrambled_head_on_intact_features_is_caught_by_the_probe(trained, splits, tmp_path):
    assert evaluation(trained, splits, tmp_path, probe=False).run()["forget_acc"] > 0.9  # the features know the classes
    scrambled = TinyClassifier()
    scrambled.load_state_dict(trained.state_dict())
    with torch.no_grad():  # each class's output now scores the next class: the head forgot, the features did not
        scrambled.fc.weight.copy_(trained.fc.weight.roll(1, dims=0))
        scrambled.fc.bias.copy_(trained.fc.bias.roll(1))
    metrics = evaluation(scrambled, splits, tmp_path, probe=True).run()
    assert metrics["forget_acc"] < 0.1
    assert metrics["probe_forget_acc"] > 0.9 and metrics["probe_test_acc"] > 0.9


def test_probing_leaves_the_other_metrics_and_item_scores_unchanged(trained, splits, tmp_path, monkeypatch):
    plain = evaluation(trained, splits, tmp_path, probe=False)
    without = plain.run()
    without_items = read_item_scores(plain.model_path)
    fitted_on = []

    def recording_probe(fit, scored, *args):
        fitted_on.append(len(fit[0]))
        return probe_accuracy(fit, scored, *args)

    monkeypatch.setattr(evaluation_module, "probe_accuracy", recording_probe)
    probed = evaluation(trained, splits, tmp_path, probe=True)
    with_probe = probed.run()
    assert fitted_on == [160]  # the retain and validation items
    assert {key: value for key, value in with_probe.items() if not key.startswith("probe_")} == without
    assert {"probe_forget_acc", "probe_test_acc"} <= with_probe.keys()
    assert read_item_scores(probed.model_path)["splits"] == without_items["splits"]  # no validation rows


def test_layer_inputs_are_the_penultimate_features_of_each_pass():
    network, images = TinyClassifier(), torch.randn(5, 1, SIDE, SIDE)
    inputs = LayerInputs(network, "fc")
    with torch.no_grad():
        network(images[:2])
        network(images[2:])
        expected = network.body(images).numpy()
    assert np.allclose(inputs.take(), expected, atol=1e-6)  # batches of 2 and 3 round like one of 5
    assert inputs.take().size == 0


def test_a_missing_layer_is_refused_by_name():
    with pytest.raises(ValueError, match="no layer 'head'"):
        LayerInputs(TinyClassifier(), "head")


def test_a_shard_ensemble_is_probed_on_its_members_features_side_by_side():
    ensemble, images = ShardEnsemble(TinyClassifier(), shards=3), torch.randn(4, 1, SIDE, SIDE)
    for member in ensemble.members:  # the copies start identical; make each member's features its own
        torch.nn.init.normal_(member.body[1].weight)
    inputs = LayerInputs(ensemble, "fc")
    with torch.no_grad():
        ensemble(images[:1])
        ensemble(images[1:])
        expected = np.concatenate([member.body(images).numpy() for member in ensemble.members], axis=1)
    assert np.allclose(inputs.take(), expected, atol=1e-6)
