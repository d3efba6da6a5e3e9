"""model-zoo's classification_template as a guest (YAML configs, flat layout), end to end through
``medunlearn guest`` on images of its own kind: train, exact retraining, a label-based and a saliency-based strategy,
evaluation (accuracy, AUC, attacks, gap to retraining), certificates verified, a bad request refused, the equivalent
``python -m monai.bundle run`` command, and the guest's folder unchanged."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from guest_data import folder_hashes, guest_bundle, write_shape_images

from medunlearn_monai.cli import main
from medunlearn_monai.guest.workflows import plan
from medunlearn_monai.records import read_json

IMAGES = 40
# The guest splits its data list itself (partition_dataset, 4:1, seed 0): of 40 images, img00, img03, img06, img09,
# img19, img21, img23 and img38 validate (all four classes); these two train.
FORGOTTEN = ["img11", "img04"]
STRATEGIES = ("rl", "salun")
EPOCHS = 60
IMAGE_SIZE = 64
SMALL = {
    "num_epochs": EPOCHS,
    "val_interval": EPOCHS,
    "num_workers": 0,
    "network_def#init_features": 16,
    "network_def#growth_rate": 16,
    "network_def#block_config": "[1,1,1,1]",
    "experiment_name": "guest-template",
}


def arguments(options: dict) -> list[str]:
    return [word for key, value in options.items() for word in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every workflow once through the command line; returns the work folder, models folder, guest, hashes."""
    guest = guest_bundle("classification_template")
    before = folder_hashes(guest)
    work = tmp_path_factory.mktemp("template")
    data_json = write_shape_images(work / "data", IMAGES, size=IMAGE_SIZE)
    (work / "request.txt").write_text("\n".join(FORGOTTEN) + "\n")
    models = work / "models"
    common = arguments({**SMALL, "data_json": data_json, "model_dir": models})
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
        for model in ["retrained", "unlearned_rl"]:
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
    assert certificate["guarantee"] == "exact"
    assert certificate["counts"]["forgotten_subjects"] == 2 and certificate["counts"]["retained_items"] == 30
    assert certificate["consumed_items"]["learned_items"] == 30


def test_evaluation_scores_accuracy_auc_and_attacks_per_split(pipeline):
    _, models, _, _, _ = pipeline
    original = read_json(models / "model.eval.json")
    assert original["retain_acc"] > 0.8 and original["test_acc"] > 0.5  # four classes: chance is 0.25
    assert original["test_auc"] > 0.8
    assert {"mia_efficacy", "mia_loss_auc", "forget_acc"} <= original.keys()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_unlearns_the_trained_model_and_is_scored_against_retraining(pipeline, strategy):
    _, models, _, _, _ = pipeline
    record = read_json(models / f"unlearned_{strategy}.json")
    assert record["source_model_sha256"] == read_json(models / "model.json")["model_sha256"]
    assert read_json(models / f"unlearned_{strategy}.certificate.json")["consumed_items"]["forget_flagged_items"] == 2
    unlearned = read_json(models / f"unlearned_{strategy}.eval.json")
    retrained = read_json(models / "retrained.eval.json")
    names = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy")
    assert unlearned["gap_to_retrain"] == pytest.approx(100 * sum(abs(unlearned[n] - retrained[n]) for n in names) / 4)


def test_certificates_verify(pipeline):
    _, _, _, _, verified = pipeline
    assert verified == {"retrained": 0, "unlearned_rl": 0}


def test_mlflow_runs_finished_with_the_guests_validation_metric(pipeline):
    work, _, _, _, _ = pipeline
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("guest-template").experiment_id])
    assert {run.info.status for run in runs} == {"FINISHED"} and len(runs) == 2 + len(STRATEGIES) + 4
    train = next(run for run in runs if run.data.params["workflow"] == "train")
    assert {"val_accuracy", "train_seconds"} <= train.data.metrics.keys()
    evaluation = next(run for run in runs if run.info.run_name == "evaluate-rl")
    assert {"test_auc", "gap_to_retrain"} <= evaluation.data.metrics.keys()


def test_unknown_subject_is_refused_with_our_message(pipeline, capsys):
    work, models, guest, _, _ = pipeline
    (work / "unknown.txt").write_text("img11\nimg99\n")
    files = folder_hashes(models)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        options = {**SMALL, "data_json": work / "data" / "train_samples.json", "model_dir": models,
                   "forget_request_file": work / "unknown.txt"}  # fmt: skip
        code = main(["guest", str(guest), "train", *arguments(options)])
    assert code == 2
    error = capsys.readouterr().err
    assert "ForgetRequestError" in error and "1 of 2 subjects are not in the training data (entries #2)" in error
    assert folder_hashes(models) == files


def test_the_printed_monai_bundle_command_runs_the_same_evaluation(pipeline, tmp_path):
    work, models, guest, _, _ = pipeline
    retrained = read_json(models / "retrained.eval.json")
    options = {**SMALL, "data_json": str(work / "data" / "train_samples.json"), "model_dir": str(models),
               "model_path": str(tmp_path / "retrained.pt"),
               "forget_request_file": str(work / "request.txt")}  # fmt: skip
    (tmp_path / "retrained.pt").write_bytes((models / "retrained.pt").read_bytes())
    command = plan(guest, "evaluate", **options).command()
    assert command.startswith("python -m monai.bundle run --config_file \"['") and "_disabled_" in command
    store = f"sqlite:///{work / 'mlflow.db'}"
    environment = {**os.environ, "MLFLOW_TRACKING_URI": store, "MEDUNLEARN_SALT": "guest-salt"}
    subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=tmp_path, env=environment, check=True,
                   capture_output=True)  # fmt: skip
    again = read_json(tmp_path / "retrained.eval.json")
    assert again["test_acc"] == retrained["test_acc"] and again["retain_acc"] == retrained["retain_acc"]


def test_guest_folder_is_unchanged(pipeline):
    _, _, guest, before, _ = pipeline
    assert folder_hashes(guest) == before
    assert not (Path(guest) / "results").exists() and not (Path(guest) / "models").exists()
