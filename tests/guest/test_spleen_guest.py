"""model-zoo's spleen_ct_segmentation as a guest, end to end through ``medunlearn guest``, on tiny Task09-style data:
train, exact retraining, a label-based and a saliency-based strategy, evaluation with the gap to retraining,
certificates verified, a bad request refused, and the guest's folder unchanged."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from guest_data import folder_hashes, guest_bundle, write_spleen_task

from medunlearn_monai.cli import main
from medunlearn_monai.guest.workflows import plan
from medunlearn_monai.records import read_json

SUBJECTS = [f"spleen_{number}" for number in range(1, 14)]
# The guest keeps its own split: the last 9 files (sorted by name) validate, the first 4 train:
# spleen_1, spleen_10, spleen_11, spleen_12.
FORGOTTEN = "spleen_10"
STRATEGIES = ("rl", "salun")
EPOCHS = 30
# Tiny network and patches through the guest's own config keys; the guest's file stays as it is.
SMALL = {
    "epochs": EPOCHS,
    "val_interval": EPOCHS,
    "network_def#channels": "[4,8,16]",
    "network_def#strides": "[2,2]",
    "network_def#num_res_units": 1,
    "train#random_transforms#0#spatial_size": "[16,16,16]",
    "train#random_transforms#0#num_samples": 2,
    "validate#inferer#roi_size": "[32,32,16]",
    "train#dataloader#num_workers": 0,
    "validate#dataloader#num_workers": 0,
    "experiment_name": "guest-spleen",
}


def arguments(options: dict) -> list[str]:
    return [word for key, value in options.items() for word in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every workflow once through the command line; returns the work folder, models folder, guest, hashes."""
    guest = guest_bundle("spleen_ct_segmentation")
    before = folder_hashes(guest)
    work = tmp_path_factory.mktemp("spleen")
    write_spleen_task(work / "data", SUBJECTS)
    (work / "request.txt").write_text(FORGOTTEN + "\n")
    models = work / "models"
    common = arguments({**SMALL, "dataset_dir": work / "data", "model_dir": models})
    request = ["--forget_request_file", str(work / "request.txt")]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        patch.setenv("MEDUNLEARN_SALT", "guest-salt")
        assert main(["guest", str(guest), "train", *common]) == 0
        assert main(["guest", str(guest), "train", *common, *request]) == 0
        for strategy in STRATEGIES:
            assert main(["guest", str(guest), "unlearn", "--strategy", strategy, *common, *request]) == 0
        for model in ["model", "retrained", *(f"unlearned_{name}" for name in STRATEGIES)]:
            model_path = ["--model_path", str(models / f"{model}.pt")]
            assert main(["guest", str(guest), "evaluate", *common, *request, *model_path]) == 0
        verified = {}
        for model in ["retrained", "unlearned_salun"]:
            files = [
                "--model_path",
                str(models / f"{model}.pt"),
                "--certificate",
                str(models / f"{model}.certificate.json"),
            ]
            verified[model] = main(["guest", str(guest), "verify", *common, *request, *files])
    return work, models, guest, before, verified


def test_exact_retraining_learns_the_retained_subjects_only(pipeline):
    _, models, _, _, _ = pipeline
    certificate = read_json(models / "retrained.certificate.json")
    assert certificate["guarantee"] == "exact" and certificate["workflow"] == "retrain"
    assert certificate["counts"]["forgotten_subjects"] == 1 and certificate["counts"]["retained_items"] == 3
    assert certificate["consumed_items"]["learned_items"] == 3
    assert certificate["consumed_items"]["forget_flagged_items"] == 0


def test_guest_trains_through_the_overlays_and_segments_the_spleen(pipeline):
    _, models, _, _, _ = pipeline
    original = read_json(models / "model.eval.json")
    assert read_json(models / "model.json")["max_epochs"] == EPOCHS
    assert original["retain_dice"] > 0.5 and original["test_dice"] > 0.5


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_unlearns_the_trained_model_and_is_scored_against_retraining(pipeline, strategy):
    _, models, _, _, _ = pipeline
    record = read_json(models / f"unlearned_{strategy}.json")
    assert record["source_model_sha256"] == read_json(models / "model.json")["model_sha256"]
    certificate = read_json(models / f"unlearned_{strategy}.certificate.json")
    assert certificate["guarantee"] == "approximate"
    assert certificate["consumed_items"]["forget_flagged_items"] == 1
    unlearned = read_json(models / f"unlearned_{strategy}.eval.json")
    retrained = read_json(models / "retrained.eval.json")
    differences = [abs(unlearned[key] - retrained[key]) for key in ("forget_dice", "retain_dice", "test_dice")]
    assert unlearned["gap_to_retrain"] == pytest.approx(100 * sum(differences) / 3)
    assert unlearned["reference_model"] == "retrained.pt"
    assert certificate["metrics"]["retrained"]["test_dice"] == pytest.approx(retrained["test_dice"])


def test_certificates_verify(pipeline):
    _, _, _, _, verified = pipeline
    assert verified == {"retrained": 0, "unlearned_salun": 0}


def test_mlflow_runs_finished_with_lineage_and_the_guests_validation_metric(pipeline):
    work, _, _, _, _ = pipeline
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("guest-spleen").experiment_id])
    assert {run.info.status for run in runs} == {"FINISHED"} and len(runs) == 2 + len(STRATEGIES) + 4
    train = next(run for run in runs if run.data.params["workflow"] == "train")
    assert {"val_mean_dice", "train_seconds"} <= train.data.metrics.keys()
    salun = next(run for run in runs if run.info.run_name == "unlearn-salun")
    contexts = {tag.value for dataset in salun.inputs.dataset_inputs for tag in dataset.tags}
    assert contexts == {"retain", "forget"} and salun.data.params["saliency_ratio"] == "0.5"


def test_unknown_subject_is_refused_with_our_message(pipeline, capsys):
    work, models, guest, _, _ = pipeline
    (work / "unknown.txt").write_text("spleen_99\n")
    files = folder_hashes(models)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        options = {
            **SMALL,
            "dataset_dir": work / "data",
            "model_dir": models,
            "forget_request_file": work / "unknown.txt",
        }
        code = main(["guest", str(guest), "unlearn", "--strategy", "rl", *arguments(options)])
    assert code == 2
    error = capsys.readouterr().err
    assert "ForgetRequestError" in error and "1 of 1 subjects are not in the training data" in error
    assert "spleen_99" not in error
    assert folder_hashes(models) == files


def test_the_printed_monai_bundle_command_runs_the_same_evaluation(pipeline, tmp_path):
    work, models, guest, _, _ = pipeline
    expected = read_json(models / "unlearned_salun.eval.json")
    (tmp_path / "unlearned_salun.pt").write_bytes((models / "unlearned_salun.pt").read_bytes())
    (tmp_path / "unlearned_salun.json").write_bytes((models / "unlearned_salun.json").read_bytes())
    options = {**SMALL, "dataset_dir": str(work / "data"), "model_dir": str(models),
               "model_path": str(tmp_path / "unlearned_salun.pt"),
               "forget_request_file": str(work / "request.txt")}  # fmt: skip
    command = plan(guest, "evaluate", **options).command()
    assert command.startswith("python -m monai.bundle run --config_file \"['")
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MEDUNLEARN_SALT": "guest-salt",
    }
    subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=tmp_path, env=environment, check=True,
                   capture_output=True)  # fmt: skip
    again = read_json(tmp_path / "unlearned_salun.eval.json")
    for split in ("retain", "forget", "test"):
        assert again[f"{split}_dice"] == expected[f"{split}_dice"], split
    assert again["gap_to_retrain"] == expected["gap_to_retrain"]


def test_guest_folder_is_unchanged(pipeline):
    _, _, guest, before, _ = pipeline
    assert folder_hashes(guest) == before
    assert not (Path(guest) / "models").exists() and not (Path(guest) / "eval").exists()
