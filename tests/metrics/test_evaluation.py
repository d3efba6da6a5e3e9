"""ClassificationEvaluation's per-item scores and loss attack, on a stock MONAI evaluator with a lookup "network"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd

from medunlearn_monai.evaluation import ClassificationEvaluation
from medunlearn_monai.forget import hash_subject
from medunlearn_monai.records import item_scores_path, read_item_scores, write_json
from medunlearn_monai.tracking import MLflowTracker

SALT = b"salt"
CLASSES = 4


class Memoriser(torch.nn.Module):
    """Confident in the true class of items it was trained on (pixel 1 set), uniform on others.

    Pixel 0 of the image holds the true class, so the "network" answers from its input.
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pixels = image.flatten(1)
        seen = pixels[:, 1:2]
        return 10.0 * seen * torch.nn.functional.one_hot(pixels[:, 0].long(), CLASSES)


def items(prefix: str, count: int, seen: bool) -> list[dict]:
    return [
        {"image": torch.tensor([[[float(i % CLASSES), float(seen)]]]), "label": i % CLASSES, "subject": f"{prefix}-{i}"}
        for i in range(count)
    ]


def evaluator() -> SupervisedEvaluator:
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items("x", 1, True), batch_size=1),
        network=Memoriser(),
        postprocessing=Activationsd(keys="pred", softmax=True),
    )


def loaders(forget_seen: bool) -> dict[str, DataLoader]:
    return {
        "retain": DataLoader(items("retain", 12, True), batch_size=5),
        "forget": DataLoader(items("patient", 6, forget_seen), batch_size=5),
        "test": DataLoader(items("test", 9, False), batch_size=5),
    }


def saved_model(path) -> str:
    path.write_bytes(b"weights")
    write_json(path.with_suffix(".json"), {"workflow": "train", "seconds": 1.0, "samples_per_second": 1.0})
    return str(path)


def test_memorised_forget_items_are_exposed_by_the_loss_attack(tmp_path):
    model = saved_model(tmp_path / "model.pt")
    metrics = ClassificationEvaluation(evaluator(), loaders(forget_seen=True), model, salt=SALT).run()
    assert metrics["forget_acc"] == 1.0
    assert metrics["mia_loss_auc"] == 1.0
    assert metrics["mia_loss_tpr_at_1pct_fpr"] == 1.0 and metrics["mia_loss_tpr_at_0.1pct_fpr"] == 1.0


def test_forget_items_scored_like_unseen_ones_give_a_chance_level_attack(tmp_path):
    model = saved_model(tmp_path / "model.pt")
    metrics = ClassificationEvaluation(evaluator(), loaders(forget_seen=False), model, salt=SALT).run()
    assert metrics["mia_loss_auc"] == pytest.approx(0.5)  # every forget and test loss ties
    assert metrics["mia_loss_tpr_at_1pct_fpr"] == 0.0


def test_per_item_scores_file_has_one_hashed_row_per_item(tmp_path):
    model = saved_model(tmp_path / "model.pt")
    ClassificationEvaluation(
        evaluator(), loaders(forget_seen=True), model, salt=SALT, forget_request_sha256="req"
    ).run()
    scores = read_item_scores(model)
    assert scores["forget_request_sha256"] == "req"
    assert {split: len(rows["loss"]) for split, rows in scores["splits"].items()} == {
        "retain": 12,
        "forget": 6,
        "test": 9,
    }
    forget = scores["splits"]["forget"]
    assert forget["subject_sha256"] == [hash_subject(f"patient-{i}", SALT) for i in range(6)]  # the loader's order
    text = item_scores_path(model).read_text()
    assert "patient-" not in text and "retain-" not in text
    test = scores["splits"]["test"]
    assert test["loss"] == pytest.approx([np.log(CLASSES)] * 9)  # uniform over the classes: -log(1/4)
    assert np.exp(-np.array(forget["loss"])) == pytest.approx(forget["confidence"])


def test_multilabel_items_get_the_mean_cross_entropy_of_their_known_labels(tmp_path):
    model = saved_model(tmp_path / "model.pt")
    item = {"image": torch.zeros(1, 1, 2), "label": torch.tensor([1.0, float("nan")]), "subject": "p"}
    constant = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader([item], batch_size=1),
        network=lambda image: torch.full((image.shape[0], 2), np.log(4.0)),  # sigmoid = 0.8
        postprocessing=Activationsd(keys="pred", sigmoid=True),
    )
    evaluation = ClassificationEvaluation(constant, {"test": DataLoader([item], batch_size=1)}, model, multilabel=True)
    metrics = evaluation.run()
    assert read_item_scores(model)["splits"]["test"]["loss"] == pytest.approx([-np.log(0.8)])
    assert "mia_loss_auc" not in metrics  # no retain or forget split


def test_item_scores_reach_mlflow_as_a_table(tmp_path):
    tracker = MLflowTracker("classification-test", "evaluate-original")
    tracker.start()
    model = saved_model(tmp_path / "model.pt")
    ClassificationEvaluation(evaluator(), loaders(forget_seen=True), model, tracker=tracker, salt=SALT).run()
    tracker.end()
    tables = [entry.path for entry in tracker.client.list_artifacts(tracker.run_id, "tables")]
    assert "tables/model.items.json" in tables
    assert tracker.client.get_run(tracker.run_id).data.metrics["mia_loss_auc"] == 1.0


def test_items_without_a_subject_are_refused(tmp_path):
    model = saved_model(tmp_path / "model.pt")
    anonymous = [{key: value for key, value in item.items() if key != "subject"} for item in items("t", 2, False)]
    evaluation = ClassificationEvaluation(evaluator(), {"test": DataLoader(anonymous, batch_size=2)}, model)
    with pytest.raises(KeyError, match="'subject' key"):
        evaluation.run()
