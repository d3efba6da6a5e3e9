"""Sharded training (configs/sisa.json) through monai.bundle: exact unlearning by retraining the touched shard only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from medunlearn_monai.certificate import verify_certificate
from medunlearn_monai.cli import _root_cause
from medunlearn_monai.data.medmnist import load_medmnist_items
from medunlearn_monai.data.synthetic import (
    write_synthetic_chexpert,
    write_synthetic_mrbrains18,
    write_synthetic_tissuemnist,
)
from medunlearn_monai.records import file_sha256, read_json
from medunlearn_monai.sisa import ShardedTrainingError, ShardPlan
from medunlearn_monai.workflows import config_value, run_workflow

BUNDLE = "tissuemnist_resnet_classification"
SHARDS, SLICES, SEED = 3, 3, 0
SMALL = {
    "batch_size": 32,
    "max_epochs": 2 * SLICES,
    "sisa_shards": SHARDS,
    "sisa_slices": SLICES,
    "seed": SEED,
    "experiment_name": "e2e-sisa",
    "network_def#widen_factor": 0.5,  # half-width ResNet-18: these tests compare models exactly, at any width
}
SALT = "e2e-salt"


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def folder_hashes(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): file_sha256(path) for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Train a sharded model, unlearn one subject from the middle slice of a shard, retrain from scratch without
    it and evaluate; returns the folder, the forgotten subject's shard and the original folder's hashes."""
    work = tmp_path_factory.mktemp("sisa")
    data = write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=240, n_val=60, n_test=120)
    plan = ShardPlan(SHARDS, SLICES, SEED)
    subject = next(
        item["subject"] for item in load_medmnist_items(data, "train") if plan.locate(item["subject"])[1] == 1
    )
    (work / "request.txt").write_text(subject + "\n")
    common = {"dataset_dir": str(work / "data"), "model_dir": str(work / "models"), **SMALL}
    request = {"forget_request_file": str(work / "request.txt")}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        patch.setenv("MEDUNLEARN_SALT", SALT)
        run_workflow(BUNDLE, "train", "sisa", **common)
        original = folder_hashes(work / "models" / "sisa.shards")
        original["sisa.pt"] = file_sha256(work / "models" / "sisa.pt")
        run_workflow(BUNDLE, "unlearn", "sisa", **common, **request)
        run_workflow(BUNDLE, "train", "sisa", **common, **request)
        for model in ("sisa", "sisa_retrained", "unlearned_sisa"):  # the exact counterpart before the unlearned
            run_workflow(
                BUNDLE, "evaluate", "sisa", **common, **request, model_path=str(work / "models" / f"{model}.pt")
            )
    return work, subject, plan.locate(subject)[0], original


def test_unlearning_retrains_only_the_forgotten_subjects_shard_from_its_slice(sharded):
    work, _, shard, _ = sharded
    record = read_json(work / "models" / "unlearned_sisa.json")
    assert record["workflow"] == "unlearn" and record["strategy"] == "sisa"
    assert record["sisa"]["retrained_shards"] == [shard]
    assert record["sisa"]["first_retrained_slice"] == {str(shard): 2}  # the subject sits in slice 2 of 3
    assert record["sisa"]["trained_stages"] == SLICES - 1
    original, unlearned = work / "models" / "sisa.shards", work / "models" / "unlearned_sisa.shards"
    for other in range(SHARDS):
        for stage in range(1, SLICES + 1):
            same = file_sha256(original / f"shard_{other}" / f"slice_{stage}.pt") == file_sha256(
                unlearned / f"shard_{other}" / f"slice_{stage}.pt"
            )
            assert same == (other != shard or stage == 1), (other, stage)


def test_unlearned_ensemble_equals_sharded_training_from_scratch_without_the_subject(sharded):
    work, _, _, _ = sharded
    unlearned, scratch = state(work / "models" / "unlearned_sisa.pt"), state(work / "models" / "sisa_retrained.pt")
    original = state(work / "models" / "sisa.pt")
    assert unlearned.keys() == scratch.keys()
    assert all(torch.equal(unlearned[key], scratch[key]) for key in unlearned)
    assert not all(torch.equal(unlearned[key], original[key]) for key in unlearned)
    assert read_json(work / "models" / "sisa_retrained.json")["sisa"]["trained_stages"] == SHARDS * SLICES


def test_the_original_sharded_model_is_never_modified(sharded):
    work, _, _, original = sharded
    now = folder_hashes(work / "models" / "sisa.shards")
    now["sisa.pt"] = file_sha256(work / "models" / "sisa.pt")
    assert now == original


def test_certificate_records_the_retrained_shards_and_nothing_names_the_subject(sharded):
    work, subject, shard, _ = sharded
    certificate = read_json(work / "models" / "unlearned_sisa.certificate.json")
    assert certificate["sisa"]["retrained_shards"] == [shard]
    assert certificate["counts"]["forgotten_subjects"] == 1 and certificate["counts"]["trained_forget_items"] == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDUNLEARN_SALT", SALT)
        verdicts = verify_certificate(
            work / "models" / "unlearned_sisa.certificate.json",
            work / "models" / "unlearned_sisa.pt",
            BUNDLE,
            dataset_dir=str(work / "data"),
            forget_request_file=str(work / "request.txt"),
        )
    assert verdicts and all(verdict.passed for verdict in verdicts)
    texts = [path.read_text() for path in (work / "models").rglob("*.json")]
    texts += [path.read_text(errors="ignore") for path in (work / "mlruns").rglob("*") if path.is_file()]
    assert texts and not any(subject in text for text in texts)


def test_unlearned_sisa_is_compared_with_sharded_retraining_its_exact_counterpart(sharded):
    work, _, _, _ = sharded
    models = work / "models"
    evaluation = read_json(models / "unlearned_sisa.eval.json")
    assert evaluation["reference_model"] == "sisa_retrained.pt"
    assert evaluation["gap_to_retrain"] == pytest.approx(0.0, abs=1e-9)  # the same weights, bit for bit
    retrained_seconds = read_json(models / "sisa_retrained.json")["seconds"]
    unlearn_seconds = read_json(models / "unlearned_sisa.json")["seconds"]
    assert evaluation["speedup_vs_retrain"] == pytest.approx(retrained_seconds / unlearn_seconds)
    certificate = read_json(models / "unlearned_sisa.certificate.json")
    assert certificate["guarantee"] == "exact" and "evidence" not in certificate
    counterpart = read_json(models / "sisa_retrained.eval.json")
    assert certificate["metrics"]["retrained"]["forget_acc"] == counterpart["forget_acc"]


def test_sharded_models_are_evaluated_like_any_other(sharded):
    work, _, _, _ = sharded
    single = read_json(work / "models" / "sisa_retrained.eval.json")
    for model in ("sisa", "unlearned_sisa"):
        metrics = read_json(work / "models" / f"{model}.eval.json")
        # the same scores as a single model's evaluation, fractions on the same scale
        assert {
            "retain_acc",
            "forget_acc",
            "test_acc",
            "mia_efficacy",
            "mia_loss_auc",
        } <= metrics.keys() & single.keys()
        # A range on purpose: the report multiplies every accuracy by 100 once, so a percentage here (a shard
        # ensemble's vote counted per shard, say) would show as thousands.
        assert 0 <= metrics["test_acc"] <= 1 and 0 <= metrics["forget_acc"] <= 1
    record = read_json(work / "models" / "sisa.json")
    assert record["workflow"] == "train" and record["sisa"]["retrained_shards"] == list(range(SHARDS))


def test_shards_trained_as_separate_jobs_assemble_into_the_same_model(sharded, tmp_path, monkeypatch):
    work, _, _, _ = sharded
    monkeypatch.setenv("MEDUNLEARN_SALT", SALT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    common = {"dataset_dir": str(work / "data"), "model_dir": str(tmp_path / "models"), **SMALL}
    run_workflow(BUNDLE, "train", "sisa", **common, sisa_shard_ids=[0])
    assert not (tmp_path / "models" / "sisa.pt").exists()  # shards 1 and 2 are still missing
    run_workflow(BUNDLE, "train", "sisa", **common, sisa_shard_ids=[1, 2])
    jobs, single = state(tmp_path / "models" / "sisa.pt"), state(work / "models" / "sisa.pt")
    assert all(torch.equal(jobs[key], single[key]) for key in single)


def test_unlearning_needs_a_sharded_source_trained_with_the_same_settings(sharded, tmp_path, monkeypatch):
    work, _, _, _ = sharded
    monkeypatch.setenv("MEDUNLEARN_SALT", SALT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    models = tmp_path / "models"
    shutil.copytree(work / "models" / "sisa.shards", models / "sisa.shards")
    for name in ("sisa.pt", "sisa.json"):
        shutil.copyfile(work / "models" / name, models / name)
    request = {"forget_request_file": str(work / "request.txt"), "dataset_dir": str(work / "data")}
    with pytest.raises(Exception) as error:
        run_workflow(BUNDLE, "unlearn", "sisa", **{**SMALL, "max_epochs": SLICES}, **request, model_dir=str(models))
    cause = _root_cause(error.value)
    assert isinstance(cause, ShardedTrainingError) and "other SISA settings (epochs_per_slice)" in str(cause)
    assert not (models / "unlearned_sisa.pt").exists() and not (models / "unlearned_sisa.shards").exists()
    shutil.rmtree(models / "sisa.shards")
    with pytest.raises(Exception) as error:
        run_workflow(BUNDLE, "unlearn", "sisa", **SMALL, **request, model_dir=str(models))
    assert "has no shard manifest" in str(_root_cause(error.value))


OTHER_BUNDLES = {
    "chexpert_resnet_classification": {"image_size": 32, "batch_size": 16, "max_epochs": 2, "sisa_shards": 2},
    "mrbrains18_med3d_segmentation": {
        "depth": 10,
        "pixdim": [4.0, 4.0, 6.0],
        "roi_size": [32, 32, 16],
        "test_subjects": ["mrb-subject-g"],
        "max_epochs": 2,
        "val_interval": 2,
        "sisa_shards": 2,
    },
}


def write_data(bundle: str, folder: Path) -> Path:
    if bundle.startswith("chexpert"):
        return write_synthetic_chexpert(folder / "CheXpert-v1.0-small", n_patients=40, size=32)
    subjects = [f"mrb-subject-{letter}" for letter in "abcdefg"]
    write_synthetic_mrbrains18(folder, n_subjects=len(subjects), spacing=[4.0, 4.0, 6.0], subject_ids=subjects)
    return folder


@pytest.mark.parametrize("bundle", sorted(OTHER_BUNDLES))
def test_every_bundle_unlearns_by_retraining_the_shards_that_held_the_subject(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDUNLEARN_SALT", SALT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings = {
        "dataset_dir": str(write_data(bundle, tmp_path / "data")),
        "model_dir": str(tmp_path / "models"),
        "sisa_slices": 2,
        **OTHER_BUNDLES[bundle],
    }
    request = {"forget_fraction": 0.1}
    run_workflow(bundle, "train", "sisa", **settings)
    run_workflow(bundle, "unlearn", "sisa", **settings, **request)
    run_workflow(
        bundle, "evaluate", "sisa", **settings, **request, model_path=str(tmp_path / "models/unlearned_sisa.pt")
    )
    forgotten = config_value(bundle, "forget_request", **settings, **request).subject_ids
    places = [ShardPlan(2, 2, SEED).locate(subject) for subject in forgotten]
    first_slices = {str(shard): 1 + min(r for k, r in places if k == shard) for shard in {k for k, _ in places}}
    record = read_json(tmp_path / "models" / "unlearned_sisa.json")
    assert record["sisa"]["first_retrained_slice"] == first_slices
    assert record["sisa"]["trained_stages"] == sum(3 - first for first in first_slices.values())
    metrics = read_json(tmp_path / "models" / "unlearned_sisa.eval.json")
    assert {"forget_dice", "test_dice"} <= metrics.keys() if "mrbrains18" in bundle else {"test_auc"} <= metrics.keys()
