"""End to end through monai.bundle on a synthetic CheXpert tree: train, exact retrain, FT/RL/SalUn, evaluate."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import mlflow
import monai.bundle
import numpy as np
import pytest
import torch
from PIL import Image
from retraining_reference import assert_scored_against_retraining

from medunlearn_monai.data.chexpert import CheXpertFormatError, load_chexpert_items
from medunlearn_monai.data.synthetic import write_synthetic_chexpert
from medunlearn_monai.forget import ForgetRequestError
from medunlearn_monai.records import read_json
from medunlearn_monai.workflows import config_files, run_workflow, strategies

BUNDLE = "chexpert_resnet_classification"
STRATEGIES = strategies(BUNDLE)
SMALL = {"image_size": 32, "batch_size": 16, "max_epochs": 8, "experiment_name": "e2e-cxr", "check_images": True}
FEMALE_REQUEST = {"forget_fraction": 0.25, "forget_where": {"sex": "Female"}}


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory) -> Path:
    """80 synthetic patients in the CheXpert layout."""
    work = tmp_path_factory.mktemp("chexpert_data")
    # Clear findings and exact labels: 80 patients and 8 epochs must learn them (the default data is harder).
    easy = {"cue_strength": 1.0, "noise_std": 0.02, "label_noise": 0.0}
    easy |= {"female_prevalence": 0.3, "male_prevalence": 0.3}
    return write_synthetic_chexpert(work / "CheXpert-v1.0-small", n_patients=80, size=32, **easy)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, synthetic_data):
    """Run every workflow once on 80 synthetic patients; returns the work folder, models folder and environment."""
    work = tmp_path_factory.mktemp("chexpert")
    data = synthetic_data
    environment = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MEDUNLEARN_SALT": "e2e-salt"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for key, value in environment.items():
            patch.setenv(key, value)
        common = {"dataset_dir": str(data), "model_dir": str(work / "models"), **SMALL}
        run_workflow(BUNDLE, "train", **common)
        run_workflow(BUNDLE, "train", **common, **FEMALE_REQUEST)
        unlearn_common = common  # unlearning runs each strategy's own unlearn_epochs
        for name in STRATEGIES:
            run_workflow(BUNDLE, "unlearn", name, **unlearn_common, **FEMALE_REQUEST)
        models = work / "models"
        for model in ["model", "retrained", *(f"unlearned_{name}" for name in STRATEGIES)]:
            run_workflow(BUNDLE, "evaluate", **common, **FEMALE_REQUEST, model_path=str(models / f"{model}.pt"))
    return work, data, models, environment


def parsed(data: Path, key: str, **overrides):
    parser = monai.bundle.ConfigParser()
    parser.read_config(config_files(BUNDLE, "train"))
    parser.update({"dataset_dir": str(data), "check_images": False, **overrides})
    return parser.get_parsed_content(key)


def test_splits_are_by_patient_and_no_forgotten_image_is_retained(pipeline):
    _, data, _, _ = pipeline
    train, validation, test = (parsed(data, key) for key in ("train_items", "val_items", "test_items"))
    patients = [{item["subject"] for item in split} for split in (train, validation, test)]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    forget_split = parsed(data, "forget_split", **FEMALE_REQUEST)
    forgotten = {item["subject"] for item in forget_split.forget}
    assert forgotten and {item["sex"] for item in forget_split.forget} == {"Female"}
    assert not forgotten & {item["subject"] for item in forget_split.retain}
    every_image = [item for item in load_chexpert_items(data) if item["subject"] in forgotten]
    assert sorted(item["image"] for item in forget_split.forget) == sorted(item["image"] for item in every_image)


# benchmarks/results/outcome_spread_chexpert.md: in this setting at seeds 0 and 1 and 1 and 2 torch threads, the
# original's test AUC was 0.906-0.961 and retraining lowered forget accuracy by 10.8-16.3 points (min / std 4.7).
def test_original_learns_and_retraining_forgets(pipeline):
    _, _, models, _ = pipeline
    original, retrained = read_json(models / "model.eval.json"), read_json(models / "retrained.eval.json")
    assert original["test_auc"] > 0.8
    assert retrained["forget_acc"] < original["forget_acc"] - 0.05


# The same runs: RL-stop and SalUn-stop lowered forget accuracy by 7.7 to 21.2 points in every run (7.7 at the test's
# seed 0 under both thread counts). RL (0 at seed 0), SalUn (3.1-15.0), RUM (0-2.5) and FT, l1-sparse, SCRUB and SSD
# (0 in every run: their tuned budgets leave the thresholded predictions unchanged) are not several spreads above 0
# here, so their effect is asserted by mechanism in tests/strategies/ instead.
@pytest.mark.parametrize("strategy", ["rl_stop", "salun_stop"])
def test_forgetting_strategies_lower_forget_accuracy(pipeline, strategy):
    _, _, models, _ = pipeline
    original, unlearned = read_json(models / "model.eval.json"), read_json(models / f"unlearned_{strategy}.eval.json")
    assert unlearned["forget_acc"] < original["forget_acc"] - 0.03


def test_every_unlearned_model_is_scored_against_retraining(pipeline):
    """Gap and speedup recomputed here from retrained.pt's own evaluation and record."""
    _, _, models, _ = pipeline
    assert_scored_against_retraining(models, STRATEGIES, ("forget_acc", "retain_acc", "test_acc", "mia_efficacy"))


def test_per_sex_and_per_observation_metrics_reach_mlflow(pipeline):
    _, _, _, environment = pipeline
    client = mlflow.MlflowClient(environment["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("e2e-cxr").experiment_id])
    assert {run.info.status for run in runs} == {"FINISHED"}
    evaluations = [run for run in runs if run.data.params["workflow"] == "evaluate"]
    assert len(evaluations) == 2 + len(STRATEGIES)
    for run in evaluations:
        metrics = run.data.metrics
        assert {"retain_auc", "forget_auc", "test_auc", "mia_efficacy", "forget_auc_female"} <= metrics.keys()
        # the probe's values are tested on known cases in tests/metrics; here, that every evaluation logs them
        assert {"probe_forget_acc", "probe_test_acc"} <= metrics.keys()
        assert {"test_auc_female", "test_auc_male", "test_auc_gap", "retain_acc_male", "test_auc_cardiomegaly"} <= (
            metrics.keys()
        )
        assert "forget_auc_male" not in metrics  # the request forgot female patients only
    salun = next(run for run in evaluations if run.data.params["strategy"] == "salun")
    assert {"gap_to_retrain", "speedup_vs_retrain"} <= salun.data.metrics.keys()


def test_a_request_naming_an_unknown_patient_fails_clearly(pipeline, tmp_path):
    _, data, models, _ = pipeline
    (tmp_path / "request.csv").write_text("patient_id\npatient00001\npatient99999\n")
    before = sorted(path.name for path in models.iterdir())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        with pytest.raises(Exception) as error:
            run_workflow(BUNDLE, "unlearn", "rl", dataset_dir=str(data), model_dir=str(models),
                         forget_request_file=str(tmp_path / "request.csv"), **SMALL)  # fmt: skip
    assert any(isinstance(reason, ForgetRequestError) and "entries #2" in str(reason) for reason in _chain(error.value))
    assert "patient99999" not in "".join(str(reason) for reason in _chain(error.value))
    assert sorted(path.name for path in models.iterdir()) == before


def _copy_tree(data: Path, target: Path) -> Path:
    shutil.copytree(data, target)
    return target


def _rewrite_csv(path: Path, edit) -> None:
    rows = list(csv.reader(path.read_text().splitlines()))
    path.write_text("\n".join(",".join(row) for row in edit(rows)) + "\n")


@pytest.mark.parametrize("defect", ["missing_column", "missing_image", "undecodable_image"])
def test_bad_data_fails_naming_the_row_or_file_and_writes_nothing(pipeline, tmp_path, defect):
    _, data, _, _ = pipeline
    broken = _copy_tree(data, tmp_path / "CheXpert-v1.0-small")
    first_image = broken / "train" / "patient00001" / "study1" / "view1_frontal.jpg"
    if defect == "missing_column":
        _rewrite_csv(broken / "train.csv", lambda rows: [row[:2] + row[3:] for row in rows])  # drop Age
        expected = "Age"
    elif defect == "missing_image":
        first_image.unlink()
        expected = "row 2"
    else:
        first_image.write_bytes(first_image.read_bytes()[:100])
        expected = str(first_image)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        with pytest.raises(Exception) as error:
            run_workflow(BUNDLE, "train", dataset_dir=str(broken), model_dir=str(tmp_path / "models"), **SMALL)
    (reason,) = [reason for reason in _chain(error.value) if isinstance(reason, CheXpertFormatError)]
    assert expected in str(reason)
    assert not (tmp_path / "models").exists()
    assert mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("e2e-cxr") is None


def _chain(error: BaseException) -> list[BaseException]:
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__
    return chain


def test_inference_config_predicts_like_the_trained_model(pipeline, tmp_path):
    _, data, models, _ = pipeline
    images = sorted((data / "train").rglob("view1_frontal.jpg"))[:3]
    folder = tmp_path / "images"
    for index, image in enumerate(images):
        (folder / f"case{index}").mkdir(parents=True)
        (folder / f"case{index}" / "view1_frontal.jpg").write_bytes(image.read_bytes())
    run_workflow(BUNDLE, "inference", dataset_dir=str(folder), model_dir=str(models), output_dir=str(tmp_path / "out"),
                 image_size=32)  # fmt: skip
    rows = (tmp_path / "out" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 3
    # the trained network on the image as training read it (32 px already, intensities / 255), one sigmoid per finding
    network = monai.networks.nets.resnet18(spatial_dims=2, n_input_channels=1, num_classes=5)
    network.load_state_dict(torch.load(models / "model.pt", weights_only=True))
    network.eval()
    for row in rows:
        name, *probabilities = row.split(",")
        pixels = np.asarray(Image.open(folder / Path(name).parent.name / "view1_frontal.jpg"), dtype=np.float32)
        with torch.no_grad():
            expected = torch.sigmoid(network(torch.as_tensor(pixels)[None, None] / 255.0))[0]
        assert torch.allclose(torch.tensor([float(value) for value in probabilities]), expected, atol=1e-4), name


def test_ignore_policy_trains_and_scores_on_known_labels_only(synthetic_data, tmp_path):
    # Every third image's findings are all uncertain: under the ignore policy it has no known label at all, so it
    # has no loss and no confidence, and both membership attacks must leave it out (the SVC refused NaN).
    data = _copy_tree(synthetic_data, tmp_path / "CheXpert-v1.0-small")
    _rewrite_csv(data / "train.csv", lambda rows: [rows[0]] + [
        row[:5] + ["-1.0"] * (len(row) - 5) if number % 3 == 0 else row for number, row in enumerate(rows[1:])
    ])  # fmt: skip
    items = parsed(data, "train#dataset", uncertainty="ignore")
    assert any(torch.isnan(torch.as_tensor(item["label"])).all() for item in items)
    assert any(torch.isnan(torch.as_tensor(item["label"])).any() for item in items)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        common = {"dataset_dir": str(data), "model_dir": str(tmp_path / "models"), **SMALL, "uncertainty": "ignore"}
        run_workflow(BUNDLE, "train", **{**common, "max_epochs": 2})
        run_workflow(BUNDLE, "unlearn", "salun", **{**common, "unlearn_epochs": 1}, **FEMALE_REQUEST)
        run_workflow(BUNDLE, "evaluate", **common, **FEMALE_REQUEST,
                     model_path=str(tmp_path / "models" / "unlearned_salun.pt"))  # fmt: skip
    splits = read_json(tmp_path / "models" / "unlearned_salun.items.json")["splits"]
    for split in ("retain", "forget", "test"):
        confidences = np.asarray(splits[split]["confidence"], dtype=float)
        assert np.isnan(confidences).any() and np.isfinite(confidences).any(), split
    metrics = read_json(tmp_path / "models" / "unlearned_salun.eval.json")
    for key in ("retain_auc", "test_auc", "forget_acc", "mia_efficacy", "mia_loss_auc", "test_auc_female"):
        assert 0 <= metrics[key] <= 1, key  # a number, not NaN: NaN fails both comparisons (the bug this guards)
