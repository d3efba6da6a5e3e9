"""End to end through monai.bundle: train -> exact retrain -> every strategy -> evaluate, on tiny synthetic data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from retraining_reference import assert_scored_against_retraining

from medunlearn_monai.data.medmnist import load_medmnist_items
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.forget import ForgetRequest
from medunlearn_monai.records import read_item_scores, read_json
from medunlearn_monai.workflows import config_files, run_workflow, strategies

BUNDLE = "tissuemnist_resnet_classification"
STRATEGIES = strategies(BUNDLE)
FORGET_FRACTION = 0.2
# Half-width ResNet-18 (MONAI's widen_factor): a fifth of the training CPU time, and every asserted effect is as
# large as at full width (benchmarks/results/outcome_spread_half_width.md).
WIDTH = {"network_def#widen_factor": 0.5}
SMALL = {"batch_size": 64, "max_epochs": 15, "experiment_name": "e2e", **WIDTH}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every workflow once; returns the working folder, the models folder and the forgotten IDs."""
    work = tmp_path_factory.mktemp("tissuemnist")
    data = write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=480, n_val=100, n_test=300)
    forgotten = ForgetRequest.generate(load_medmnist_items(data, "train"), FORGET_FRACTION, seed=0).subject_ids
    (work / "request.txt").write_text("\n".join(forgotten) + "\n")
    environment = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MEDUNLEARN_SALT": "e2e-salt",
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for key, value in environment.items():
            patch.setenv(key, value)
        common = {"dataset_dir": str(work / "data"), "model_dir": str(work / "models"), **SMALL}
        request = {"forget_request_file": str(work / "request.txt")}
        run_workflow(BUNDLE, "train", **common)
        run_workflow(BUNDLE, "train", **common, **request)
        for name in STRATEGIES:
            run_workflow(BUNDLE, "unlearn", name, **common, **request)  # each strategy's own unlearn_epochs
        models = work / "models"
        for model in ["model", "retrained", *(f"unlearned_{name}" for name in STRATEGIES)]:
            run_workflow(BUNDLE, "evaluate", **common, **request, model_path=str(models / f"{model}.pt"))
    return work, models, forgotten, environment


def evaluation(models: Path, model: str) -> dict:
    return read_json(models / f"{model}.eval.json")


def test_exact_retraining_forgets(pipeline):
    _, models, _, _ = pipeline
    original, retrained = evaluation(models, "model"), evaluation(models, "retrained")
    assert retrained["forget_acc"] < original["forget_acc"] - 0.1
    # A probe on features that never saw the forget items recovers less of them than one on the original's.
    assert retrained["probe_forget_acc"] < original["probe_forget_acc"] - 0.1
    assert original["forget_acc"] > original["test_acc"]  # the generalisation gap that makes forgetting measurable


# benchmarks/results/outcome_spread_half_width.md: in this setting at seeds 0 and 1 and 1 and 2 torch threads, these
# strategies lowered forget accuracy by 9.4 to 41.7 points in every run (RL 15.6-33.3, RL-stop 27.1-40.6, RUM 9.4-32.3,
# SalUn 15.6-34.4, SalUn-stop 31.2-41.7). GA (1.0-12.5: one item at seed 0), FT, l1-sparse, NegGrad+, SCRUB and SSD
# (0 in every run) are too close to nothing here, so their effect is asserted by mechanism in tests/strategies/.
@pytest.mark.parametrize("strategy", ["rl", "salun", "rl_stop", "salun_stop", "rum"])
def test_forgetting_strategies_lower_forget_accuracy(pipeline, strategy):
    _, models, _, _ = pipeline
    margin = 0.03  # 3 points, a third of the smallest drop measured
    unlearned, original = evaluation(models, f"unlearned_{strategy}"), evaluation(models, "model")
    assert unlearned["forget_acc"] < original["forget_acc"] - margin


def test_every_unlearned_model_is_scored_against_retraining(pipeline):
    """Gap and speedup are read against retrained.pt's own evaluation and record, not any other model's."""
    _, models, _, _ = pipeline
    assert_scored_against_retraining(models, STRATEGIES, ("forget_acc", "retain_acc", "test_acc", "mia_efficacy"))
    for name in STRATEGIES:
        # attack and probe scores exist for every model; their values are tested on known cases in tests/metrics
        keys = {"mia_loss_auc", "mia_loss_tpr_at_0.1pct_fpr", "probe_forget_acc", "probe_test_acc"}
        assert keys <= evaluation(models, f"unlearned_{name}").keys(), name


def test_per_item_scores_align_across_models_and_the_original_exposes_its_members(pipeline):
    _, models, forgotten, _ = pipeline
    original, retrained = read_item_scores(models / "model.pt"), read_item_scores(models / "retrained.pt")
    assert len(original["splits"]["forget"]["loss"]) == len(forgotten)  # one image per MedMNIST subject
    assert len(original["splits"]["test"]["loss"]) == 300
    for split in ("retain", "forget", "test"):
        assert original["splits"][split]["subject_sha256"] == retrained["splits"][split]["subject_sha256"]
    assert evaluation(models, "model")["mia_loss_auc"] > evaluation(models, "retrained")["mia_loss_auc"]


def test_salun_changes_at_most_the_salient_half_of_the_weights(pipeline):
    _, models, _, _ = pipeline
    original = torch.load(models / "model.pt", weights_only=True)
    unlearned = torch.load(models / "unlearned_salun.pt", weights_only=True)
    parameters = [name for name, value in original.items() if value.is_floating_point() and "running" not in name]
    total = sum(original[name].numel() for name in parameters)
    changed = sum(int((original[name] != unlearned[name]).sum()) for name in parameters)
    assert 0 < changed <= 0.5 * total


def test_original_model_file_is_never_rewritten(pipeline):
    _, models, _, _ = pipeline
    record = read_json(models / "model.json")
    from medunlearn_monai.records import file_sha256

    assert file_sha256(models / "model.pt") == record["model_sha256"]
    for name in STRATEGIES:
        assert read_json(models / f"unlearned_{name}.json")["source_model_sha256"] == record["model_sha256"]


def test_mlflow_holds_every_run_finished_with_the_documented_names(pipeline):
    _, _, _, environment = pipeline
    client = mlflow.MlflowClient(environment["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert {run.info.status for run in runs} == {"FINISHED"}
    by_workflow: dict[str, list] = {}
    for run in runs:
        by_workflow.setdefault(run.data.params["workflow"], []).append(run)
    assert {name: len(group) for name, group in by_workflow.items()} == {
        "train": 1,
        "retrain": 1,
        "unlearn": len(STRATEGIES),
        "evaluate": len(STRATEGIES) + 2,
    }
    for run in runs:
        assert {
            "bundle",
            "workflow",
            "strategy",
            "seed",
            "forget_request_sha256",
            "forget_subjects",
        } <= run.data.params.keys()
    retrain = by_workflow["retrain"][0]
    assert retrain.data.params["forget_subjects"] == str(round(FORGET_FRACTION * 480))
    assert {"train_loss", "val_acc", "unlearn_seconds", "samples_per_second"} <= retrain.data.metrics.keys()
    assert len(client.get_metric_history(retrain.info.run_id, "val_acc")) == SMALL["max_epochs"]
    evaluate_salun = next(run for run in by_workflow["evaluate"] if run.data.params["strategy"] == "salun")
    assert {
        "retain_acc",
        "forget_acc",
        "test_acc",
        "mia_efficacy",
        "gap_to_retrain",
        "unlearn_seconds",
        "speedup_vs_retrain",
        "probe_forget_acc",
        "probe_test_acc",
    } <= evaluate_salun.data.metrics.keys()
    artifacts = {entry.path for entry in client.list_artifacts(evaluate_salun.info.run_id)}
    assert {"config", "plots"} <= artifacts
    curves = [entry.path for entry in client.list_artifacts(retrain.info.run_id, "plots")]
    assert curves == ["plots/metrics_by_epoch.png"]


def test_no_forgotten_subject_id_is_stored_in_plaintext(pipeline):
    work, _, forgotten, _ = pipeline
    scanned = 0
    for path in work.rglob("*"):
        if not path.is_file() or path.name in ("request.txt", "tissuemnist.npz"):
            continue
        content = path.read_bytes()
        scanned += 1
        leaked = [subject for subject in forgotten if subject.encode() in content]
        assert not leaked, f"{path} holds {len(leaked)} forgotten subject IDs"
    assert scanned > 20


def _monai_bundle_run(work: Path, environment: dict, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", *arguments]
    return subprocess.run(
        command, cwd=work, env={**os.environ, **environment}, capture_output=True, text=True, timeout=300
    )


def test_unknown_subject_fails_through_monai_bundle_with_its_message(pipeline):
    work, models, _, environment = pipeline
    (work / "bad_request.txt").write_text("tissuemnist-train-000001\nnobody-at-all\n")
    configs = config_files(BUNDLE, "unlearn", "rl")
    before = sorted(path.name for path in models.iterdir())
    result = _monai_bundle_run(
        work,
        environment,
        "--config_file",
        str(configs),
        "--dataset_dir",
        str(work / "data"),
        "--model_dir",
        str(models),
        "--forget_request_file",
        str(work / "bad_request.txt"),
        "--experiment_name",
        "e2e-bad",
    )
    assert result.returncode != 0
    assert "1 of 2 subjects are not in the training data (entries #2)" in result.stderr
    assert "nobody-at-all" not in result.stderr + result.stdout
    assert sorted(path.name for path in models.iterdir()) == before
    assert mlflow.MlflowClient(environment["MLFLOW_TRACKING_URI"]).get_experiment_by_name("e2e-bad") is None


def test_cli_turns_a_bad_request_into_one_message_and_exit_code(pipeline):
    work, models, _, environment = pipeline
    (work / "empty.txt").write_text("# nobody\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medunlearn_monai.cli",
            "run",
            BUNDLE,
            "unlearn",
            "--strategy",
            "salun",
            "--dataset_dir",
            str(work / "data"),
            "--model_dir",
            str(models),
            "--forget_request_file",
            str(work / "empty.txt"),
        ],
        cwd=work,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("medunlearn: error: ForgetRequestError:")
    assert "is empty" in result.stderr


def test_inference_config_predicts_like_the_evaluated_model(pipeline, tmp_path):
    work, models, _, environment = pipeline
    from PIL import Image

    from medunlearn_monai.data.medmnist import load_medmnist_items

    images = tmp_path / "images"
    images.mkdir()
    items = load_medmnist_items(work / "data" / "tissuemnist.npz", "test")[:6]
    for index, item in enumerate(items):
        Image.fromarray(item["image"][0]).save(images / f"case_{index}.png")
    run_workflow(
        BUNDLE, "inference", dataset_dir=str(images), model_dir=str(models), output_dir=str(tmp_path / "out"), **WIDTH
    )
    rows = (tmp_path / "out" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 6
    network = __import__("monai").networks.nets.resnet18(
        spatial_dims=2, n_input_channels=1, num_classes=8, widen_factor=WIDTH["network_def#widen_factor"]
    )
    network.load_state_dict(torch.load(models / "model.pt", weights_only=True))
    network.eval()
    for row in rows:
        name, *probabilities = row.split(",")
        index = int(Path(name).stem.split("_")[1])
        image = torch.as_tensor(items[index]["image"], dtype=torch.float32)[None] / 255.0
        expected = torch.softmax(network(image), dim=1)[0]
        assert torch.allclose(torch.tensor([float(p) for p in probabilities]), expected, atol=1e-4)


def test_console_output_of_an_unlearning_run_holds_no_forgotten_id(pipeline, tmp_path):
    work, models, forgotten, environment = pipeline
    output_model = tmp_path / "unlearned.pt"
    result = subprocess.run(
        [sys.executable, "-m", "medunlearn_monai.cli", "run", BUNDLE, "unlearn", "--strategy", "rl",
         "--dataset_dir", str(work / "data"), "--model_dir", str(models), "--output_model", str(output_model),
         "--forget_request_file", str(work / "request.txt"), "--experiment_name", "e2e-console",
         "--network_def#widen_factor", str(WIDTH["network_def#widen_factor"])],
        cwd=work, env={**os.environ, **environment}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert output_model.is_file()
    console = result.stdout + result.stderr
    assert "Engine run finished" in console
    assert not [subject for subject in forgotten if subject in console]
