"""SegmentationEvaluation on a stock MONAI evaluator whose "network" reads the answer off its input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import MeanAbsoluteError, MeanDice, from_engine
from monai.transforms import Activationsd, AsDiscreted, Compose, CopyItemsd

from medunlearn_monai.evaluation import ReferenceMismatchError, SegmentationEvaluation
from medunlearn_monai.forget import hash_subject
from medunlearn_monai.metrics.segmentation import (
    foreground_probability_and_mask,
    mean_voxel_cross_entropy,
    misclassified_voxels,
)
from medunlearn_monai.records import item_scores_path, read_item_scores, read_json, write_json
from medunlearn_monai.tracking import MLflowTracker

SALT = b"salt"


class OneHotEcho(torch.nn.Module):
    """Logits = scale * one-hot of channel 0 of the input: scale > 0 segments perfectly, < 0 inverts."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        foreground = (image[:, :1] > 0).float()
        return self.scale * torch.cat([1 - foreground, foreground], dim=1)


def subject(name: str, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    label = (torch.rand(1, 8, 8, 4, generator=generator) > 0.5).to(torch.uint8)
    return {"image": label.float(), "label": label, "subject": name}


def evaluator(scale: float) -> SupervisedEvaluator:
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader([subject("x", 0)], batch_size=1),
        network=OneHotEcho(scale),
        postprocessing=Compose(
            [
                Activationsd(keys="pred", softmax=True),
                CopyItemsd(keys="pred", names="prob"),
                AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=2),
            ]
        ),
        key_val_metric={"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
        additional_metrics={
            "mae": MeanAbsoluteError(output_transform=foreground_probability_and_mask),
            "hard_mae": MeanAbsoluteError(output_transform=misclassified_voxels),
        },
    )


def loaders() -> dict[str, DataLoader]:
    return {
        "retain": DataLoader([subject("r1", 1), subject("r2", 2)], batch_size=1),
        "forget": DataLoader([subject("patient-007", 3)], batch_size=1),
        "test": DataLoader([subject("t1", 4)], batch_size=1),
    }


def saved_model(path, workflow: str) -> str:
    path.write_bytes(b"weights")
    write_json(path.with_suffix(".json"), {"workflow": workflow, "forget_request_sha256": "req", "seconds": 2.0,
                                           "samples_per_second": 1.0})  # fmt: skip
    return str(path)


def test_perfect_and_inverted_segmenters_score_dice_one_and_zero(tmp_path):
    model = saved_model(tmp_path / "model.pt", "train")
    metrics = SegmentationEvaluation(evaluator(20.0), loaders(), model, salt=SALT).run()
    assert metrics["retain_dice"] == pytest.approx(1.0) and metrics["forget_dice"] == pytest.approx(1.0)
    assert metrics["test_mae"] < 1e-6
    inverted = saved_model(tmp_path / "inverted.pt", "train")
    metrics = SegmentationEvaluation(evaluator(-20.0), loaders(), inverted, salt=SALT).run()
    assert metrics["retain_dice"] == pytest.approx(0.0) and metrics["test_mae"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("scale, hard", [(0.5, 0.0), (-0.5, 1.0)])
def test_hard_mae_counts_misclassified_voxels_where_the_soft_mae_counts_probability(tmp_path, scale, hard):
    model = saved_model(tmp_path / "model.pt", "train")
    metrics = SegmentationEvaluation(evaluator(scale), loaders(), model, salt=SALT).run()
    # Logits +-0.5 on the true class: argmax right (or wrong) everywhere, but P(true class) only 1 / (1 + e^-scale).
    soft = 1.0 / (1.0 + np.exp(scale))
    for split in ("retain", "forget", "test"):
        assert metrics[f"{split}_hard_mae"] == pytest.approx(hard) and metrics[f"{split}_mae"] == pytest.approx(soft)
    rows = read_json(tmp_path / "model.subjects.json")["subjects"]
    assert [row["hard_mae"] for row in rows] == pytest.approx([hard] * 4)


def test_per_subject_rows_carry_hashes_not_ids(tmp_path):
    model = saved_model(tmp_path / "model.pt", "train")
    SegmentationEvaluation(evaluator(20.0), loaders(), model, salt=SALT).run()
    table = (tmp_path / "model.subjects.json").read_text()
    rows = read_json(tmp_path / "model.subjects.json")["subjects"]
    assert [row["split"] for row in rows] == ["retain", "retain", "forget", "test"]
    assert rows[2]["subject_sha256"] == hash_subject("patient-007", SALT)
    assert "patient-007" not in table and "r1" not in table
    assert all(row["dice"] == pytest.approx(1.0) for row in rows)


@pytest.mark.parametrize("scale", [2.0, -2.0])
def test_per_subject_loss_is_the_mean_voxel_cross_entropy(tmp_path, scale):
    model = saved_model(tmp_path / "model.pt", "train")
    metrics = SegmentationEvaluation(evaluator(scale), loaders(), model, salt=SALT).run()
    # Every voxel's true class gets softmax probability 1 / (1 + e^-scale).
    expected = np.log1p(np.exp(-scale))
    splits = read_item_scores(model)["splits"]
    assert {split: len(rows["loss"]) for split, rows in splits.items()} == {"retain": 2, "forget": 1, "test": 1}
    for rows in splits.values():
        assert rows["loss"] == pytest.approx([expected] * len(rows["loss"]), rel=1e-5)
        assert rows["confidence"] == pytest.approx(np.exp(-np.array(rows["loss"])))
    assert splits["forget"]["subject_sha256"] == [hash_subject("patient-007", SALT)]
    assert "patient-007" not in item_scores_path(model).read_text()
    assert metrics["mia_loss_auc"] == pytest.approx(0.5)  # forget and test subjects are segmented alike


def test_voxel_cross_entropy_needs_probabilities_and_a_one_hot_label():
    label = torch.nn.functional.one_hot(torch.tensor([[0, 1]]), 2).permute(2, 0, 1).float()
    assert mean_voxel_cross_entropy({"prob": torch.full((2, 1, 2), 0.5), "label": label}) == pytest.approx(np.log(2))
    with pytest.raises(KeyError, match="'prob'"):
        mean_voxel_cross_entropy({"label": label})
    with pytest.raises(ValueError, match="must be one-hot"):
        mean_voxel_cross_entropy({"prob": torch.full((2, 1, 2), 0.5), "label": label[:1]})


def test_relative_numbers_against_the_evaluated_original_and_gap_to_retrain(tmp_path):
    original = saved_model(tmp_path / "model.pt", "train")
    SegmentationEvaluation(evaluator(20.0), loaders(), original, forget_request_sha256="req").run()
    retrained = saved_model(tmp_path / "retrained.pt", "retrain")
    SegmentationEvaluation(evaluator(20.0), loaders(), retrained, forget_request_sha256="req").run()
    unlearned = saved_model(tmp_path / "unlearned.pt", "unlearn")
    metrics = SegmentationEvaluation(
        evaluator(-20.0), loaders(), unlearned, retrained, original_model=original, forget_request_sha256="req"
    ).run()
    assert metrics["forget_dice_decrease_pct"] == pytest.approx(100.0)
    assert metrics["retain_dice_kept_pct"] == pytest.approx(0.0)
    assert metrics["gap_to_retrain"] == pytest.approx(100.0)
    assert metrics["forget_dice_gap_to_retrain"] == pytest.approx(100.0)
    assert metrics["speedup_vs_retrain"] == pytest.approx(1.0)


def test_original_evaluated_for_another_request_is_refused(tmp_path):
    original = saved_model(tmp_path / "model.pt", "train")
    SegmentationEvaluation(evaluator(20.0), loaders(), original, forget_request_sha256="other").run()
    unlearned = saved_model(tmp_path / "unlearned.pt", "unlearn")
    evaluation = SegmentationEvaluation(
        evaluator(20.0), loaders(), unlearned, original_model=original, forget_request_sha256="req"
    )
    with pytest.raises(ReferenceMismatchError, match="original model"):
        evaluation.run()


def test_loaders_must_hold_one_subject_per_batch(tmp_path):
    model = saved_model(tmp_path / "model.pt", "train")
    with pytest.raises(ValueError, match="one subject per batch"):
        SegmentationEvaluation(evaluator(1.0), {"test": DataLoader([subject("t", 0)] * 2, batch_size=2)}, model)


def test_overlay_plot_and_subject_table_reach_mlflow(tmp_path):
    tracker = MLflowTracker("segmentation-test", "evaluate-original")
    tracker.start()
    model = saved_model(tmp_path / "model.pt", "train")
    evaluation = SegmentationEvaluation(evaluator(20.0), loaders(), model, tracker=tracker, salt=SALT)
    evaluation.run()
    tracker.end()
    assert sorted(evaluation.slices) == ["forget", "retain", "test"]
    artifacts = {
        entry.path for folder in ("plots", "tables") for entry in tracker.client.list_artifacts(tracker.run_id, folder)
    }
    assert {"plots/overlay_by_split.png", "tables/model.subjects.json", "tables/model.items.json"} <= artifacts
