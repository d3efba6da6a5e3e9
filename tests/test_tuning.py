"""``medunlearn tune`` end to end on tiny synthetic TissueMNIST: trials as MLflow child runs scored on the
validation split, the search's cost on the bill, the best model copied, originals untouched, bad input refused
before any run, and a trajectory that does not change when the test split is replaced by noise."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest

from medunlearn_monai.cli import main
from medunlearn_monai.data.medmnist import load_medmnist_items
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.forget import ForgetRequest
from medunlearn_monai.records import (
    certificate_path,
    evaluation_path,
    file_sha256,
    item_scores_path,
    read_json,
    record_path,
    write_json,
)
from medunlearn_monai.search_space import SearchSpaceError
from medunlearn_monai.tuning import TuningError, forget_retain_tradeoff, retrained_reference, tune
from medunlearn_monai.workflows import run_workflow

BUNDLE = "tissuemnist_resnet_classification"
SEARCH = {"learning_rate": [0.005, 0.05], "momentum": [0.0, 0.5], "unlearn_epochs": 1}
N_TRIALS = 2
RL_DEFAULTS = {"learning_rate": 0.03, "momentum": 0.0}  # configs/strategies/rl.json


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Train, retrain and evaluate the reference, then tune RL for two trials through the command line."""
    work = tmp_path_factory.mktemp("tuning")
    data = write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=96, n_val=16, n_test=40)
    forgotten = ForgetRequest.generate(load_medmnist_items(data, "train"), 0.2, seed=0).subject_ids
    (work / "request.txt").write_text("\n".join(forgotten) + "\n")
    models = work / "models"
    environment = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MEDUNLEARN_SALT": "tune-salt"}
    common = {"dataset_dir": str(work / "data"), "model_dir": str(models), "batch_size": 32, "experiment_name": "tune"}
    request = {"forget_request_file": str(work / "request.txt")}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for key, value in environment.items():
            patch.setenv(key, value)
        run_workflow(BUNDLE, "train", **common, max_epochs=1)
        run_workflow(BUNDLE, "train", **common, **request, max_epochs=1)
        run_workflow(BUNDLE, "evaluate", **common, **request, model_path=str(models / "retrained.pt"))
        before = {name: file_sha256(models / name) for name in ("model.pt", "retrained.pt")}
        arguments = [f"--{key}={value}" for key, value in {**common, **request}.items()]
        command = ["tune", BUNDLE, "--strategy", "rl", "--n_trials", str(N_TRIALS), "--search", repr(SEARCH)]
        stdout, stderr = io.StringIO(), io.StringIO()
        with redirect_stdout(stdout), redirect_stderr(stderr):
            exit_code = main([*command, *arguments])
    assert exit_code == 0, stderr.getvalue()[-3000:]
    client = mlflow.MlflowClient(environment["MLFLOW_TRACKING_URI"])
    experiment_id = client.get_experiment_by_name("tune").experiment_id
    (parent,) = client.search_runs([experiment_id], "params.workflow = 'tune'")
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return SimpleNamespace(
        work=work,
        models=models,
        forgotten=forgotten,
        environment=environment,
        common=common,
        request=request,
        before=before,
        stdout=stdout.getvalue(),
        client=client,
        parent=parent,
        children=children,
    )


def _trial_runs(tuned, workflow: str) -> dict[int, mlflow.entities.Run]:
    runs = [
        run
        for run in tuned.children
        if run.data.params["workflow"] == workflow and run.data.tags["tuning_trial"].isdigit()
    ]
    return {int(run.data.tags["tuning_trial"]): run for run in runs}


def test_parent_run_logs_the_search_the_best_values_and_its_cost(tuned):
    parent = tuned.parent
    assert parent.info.status == "FINISHED"
    params, metrics = parent.data.params, parent.data.metrics
    assert params["strategy"] == "rl" and params["n_trials"] == str(N_TRIALS) and params["bundle"] == BUNDLE
    assert params["objective"] == "val_gap_to_retrain" and params["held_out_split"] == "val"
    assert json.loads(params["search_space"]) == {
        "learning_rate": "log-uniform [0.005, 0.05]",
        "momentum": "uniform [0, 0.5]",
        "unlearn_epochs": "fixed 1",
    }
    best = int(params["best_trial"])
    best_unlearn = _trial_runs(tuned, "unlearn")[best]
    for name in ("learning_rate", "momentum", "unlearn_epochs"):
        assert params[f"best_{name}"] == best_unlearn.data.params[name]
    assert metrics["best_val_gap_to_retrain"] == metrics["best_objective"]
    unlearn_seconds = {
        number: run.data.metrics["unlearn_seconds"] for number, run in _trial_runs(tuned, "unlearn").items()
    }
    assert metrics["tuning_seconds"] > sum(unlearn_seconds.values()) > 0  # every trial's cost is counted
    retrain_seconds = read_json(tuned.models / "retrained.json")["seconds"]
    expected = retrain_seconds / (metrics["tuning_seconds"] + unlearn_seconds[best])
    assert metrics["speedup_vs_retrain_incl_tuning"] == pytest.approx(expected)
    best_evaluation = read_json(tuned.models / "tuning" / "rl" / f"trial_{best}.eval.json")
    assert metrics["speedup_vs_retrain_incl_tuning"] < best_evaluation["speedup_vs_retrain"]


def test_every_trial_unlearns_and_evaluates_as_a_child_run_inside_the_search_space(tuned):
    assert {run.info.status for run in tuned.children} == {"FINISHED"}
    unlearn, evaluate = _trial_runs(tuned, "unlearn"), _trial_runs(tuned, "evaluate")
    assert sorted(unlearn) == sorted(evaluate) == list(range(1, N_TRIALS + 1))
    others = sorted(tag for run in tuned.children if not (tag := run.data.tags["tuning_trial"]).isdigit())
    assert others == ["chosen", "reference"]  # the retrained reference on validation data, the choice on test
    for run in unlearn.values():
        params = run.data.params
        assert 0.005 <= float(params["learning_rate"]) <= 0.05
        assert 0.0 <= float(params["momentum"]) <= 0.5
        assert params["unlearn_epochs"] == "1" and params["strategy"] == "rl"
    first = unlearn[1].data.params  # the strategy's shipped values come first
    assert {name: float(first[name]) for name in RL_DEFAULTS} == RL_DEFAULTS
    assert float(unlearn[2].data.params["learning_rate"]) != RL_DEFAULTS["learning_rate"]


def test_the_objective_is_each_trials_gap_to_retrain(tuned):
    history = tuned.client.get_metric_history(tuned.parent.info.run_id, "trial_objective")
    objectives = {point.step: point.value for point in history}
    assert sorted(objectives) == list(range(1, N_TRIALS + 1))
    evaluate = _trial_runs(tuned, "evaluate")
    for number, objective in objectives.items():
        evaluation = read_json(tuned.models / "tuning" / "rl" / f"trial_{number}.eval.json")
        assert objective == pytest.approx(evaluation["gap_to_retrain"])
        assert objective == pytest.approx(evaluate[number].data.metrics["gap_to_retrain"])
    assert tuned.parent.data.metrics["best_objective"] == pytest.approx(min(objectives.values()))
    assert objectives[int(tuned.parent.data.params["best_trial"])] == pytest.approx(min(objectives.values()))


def test_the_best_model_is_copied_and_the_original_and_retrained_models_are_untouched(tuned):
    models = tuned.models
    best = int(tuned.parent.data.params["best_trial"])
    tuned_model = models / "unlearned_rl_tuned.pt"
    assert file_sha256(tuned_model) == file_sha256(models / "tuning" / "rl" / f"trial_{best}.pt")
    record = read_json(record_path(tuned_model))
    assert record["strategy"] == "rl_tuned" and record["tuning"]["trial"] == best
    assert record["tuning"]["run_id"] == tuned.parent.info.run_id
    # Trials were scored on the 16 validation images; the chosen model alone is then scored on the 40 test images.
    trial_items = read_json(models / "tuning" / "rl" / f"trial_{best}.items.json")["splits"]
    chosen_items = read_json(item_scores_path(tuned_model))["splits"]
    assert len(trial_items["test"]["loss"]) == 16 and len(chosen_items["test"]["loss"]) == 40
    assert chosen_items["forget"]["loss"] == pytest.approx(trial_items["forget"]["loss"])
    assert "gap_to_retrain" in read_json(evaluation_path(tuned_model))  # against the retrained model's test scores
    for name, digest in tuned.before.items():
        assert file_sha256(models / name) == digest == read_json(record_path(models / name))["model_sha256"]


def test_the_tuned_model_gets_its_own_certificate(tuned):
    models = tuned.models
    best = int(tuned.parent.data.params["best_trial"])
    trial = read_json(certificate_path(models / "tuning" / "rl" / f"trial_{best}.pt"))
    certificate = read_json(certificate_path(models / "unlearned_rl_tuned.pt"))
    assert certificate["model_file"] == "unlearned_rl_tuned.pt" and certificate["strategy"] == "rl_tuned"
    assert certificate["model_sha256"] == file_sha256(models / "unlearned_rl_tuned.pt")
    assert certificate["tuning"] == read_json(record_path(models / "unlearned_rl_tuned.pt"))["tuning"]
    assert certificate["copied_from"] == {
        "model_file": f"trial_{best}.pt",
        "certificate_sha256": file_sha256(certificate_path(models / "tuning" / "rl" / f"trial_{best}.pt")),
    }
    for section in ("forget_request_sha256", "counts", "retain_manifest", "consumed_items", "hyperparameters"):
        assert certificate[section] == trial[section]
    assert certificate["mlflow_run_id"] == tuned.parent.info.run_id
    # its metrics and evidence are those of its own evaluation on the test split, not the trial's on validation
    evaluation = read_json(evaluation_path(models / "unlearned_rl_tuned.pt"))
    assert certificate["metrics"]["model"]["test_acc"] == evaluation["test_acc"]
    assert certificate["guarantee"] == "approximate"
    assert certificate["evidence"]["available"]["gap_to_retrain"] == evaluation["gap_to_retrain"]
    assert certificate["evidence"]["available"]["gap_reference"] == "retrained.pt"
    logged = tuned.client.list_artifacts(tuned.parent.info.run_id, "certificate")
    assert [entry.path for entry in logged] == ["certificate/unlearned_rl_tuned.certificate.json"]


def test_the_command_prints_one_line_per_trial_and_the_table(tuned):
    lines = tuned.stdout.splitlines()
    progress = [line.split(":")[0] for line in lines if re.match(r"trial \d+/\d+: val_gap_to_retrain [\d.]+ in", line)]
    assert progress == [f"trial {number}/{N_TRIALS}" for number in range(1, N_TRIALS + 1)]
    header = next(line for line in lines if line.lstrip().startswith("trial  val_gap_to_retrain"))
    # hyperparameters in the search space's order of known names (search_space.py)
    assert header.split() == ["trial", "val_gap_to_retrain", "seconds", "learning_rate", "unlearn_epochs", "momentum"]
    assert any(
        line.startswith(f"best: trial {tuned.parent.data.params['best_trial']}, val_gap_to_retrain") for line in lines
    )
    assert "speedup vs retraining, tuning included" in tuned.stdout


def test_without_a_retrained_reference_the_tradeoff_is_minimised(tuned, monkeypatch):
    """Another request (a random 10 %) has no retrained model: the objective is the documented trade-off."""
    monkeypatch.chdir(tuned.work)
    for key, value in tuned.environment.items():
        monkeypatch.setenv(key, value)
    overrides = {**tuned.common, "experiment_name": "tune-tradeoff", "forget_fraction": 0.1}
    result = tune(BUNDLE, "rl", n_trials=1, search=SEARCH, **overrides)
    assert result.objective == "val_forget_retain_tradeoff" and result.best.gap_to_retrain is None
    evaluation = read_json(evaluation_path(result.best.model))
    original = read_json(evaluation_path(tuned.models / "tuning" / "rl" / "reference_original.pt"))
    assert original["forget_request_sha256"] == evaluation["forget_request_sha256"]  # evaluated for this request
    expected = 100 * (
        abs(evaluation["forget_acc"] - evaluation["test_acc"])
        + max(0, original["retain_acc"] - evaluation["retain_acc"])
    )
    assert result.best.objective == pytest.approx(expected)
    assert "speedup_vs_retrain_incl_tuning" not in result.metrics
    assert result.metrics["tuning_seconds"] > 0  # only that the search is billed: a duration has no expected value


@pytest.mark.parametrize(
    ("strategy", "arguments", "error", "message"),
    [
        ("nope", {}, ValueError, "unlearn needs --strategy, one of ft, ga, l1_sparse, .*, ssd, sisa; got 'nope'"),
        ("rl", {"search": {"saliency_ratio": [0.1, 0.5]}}, SearchSpaceError, "'rl' does not declare 'saliency_ratio'"),
        ("rl", {"search": {"warmup_epochs": 2.0}}, SearchSpaceError, "unknown hyperparameter 'warmup_epochs'"),
        ("rl", {"n_trials": 0}, TuningError, "positive integer"),
        ("rl", {"output_model": "x.pt"}, TuningError, "tune sets output_model itself"),
    ],
)
def test_bad_input_fails_with_its_cause_before_any_run(tuned, monkeypatch, strategy, arguments, error, message):
    monkeypatch.chdir(tuned.work)
    for key, value in tuned.environment.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(error, match=message):
        tune(BUNDLE, strategy, **{**tuned.common, **tuned.request, "experiment_name": "tune-bad", **arguments})
    assert tuned.client.get_experiment_by_name("tune-bad") is None


def test_a_trial_that_raises_leaves_the_parent_run_failed(tuned, monkeypatch):
    monkeypatch.chdir(tuned.work)
    for key, value in tuned.environment.items():
        monkeypatch.setenv(key, value)
    (tuned.work / "unknown.txt").write_text("nobody-at-all\n")
    overrides = {
        **tuned.common,
        "experiment_name": "tune-failed",
        "forget_request_file": str(tuned.work / "unknown.txt"),
    }
    with pytest.raises(RuntimeError) as raised:
        tune(BUNDLE, "rl", n_trials=2, search=SEARCH, **overrides)
    assert "not in the training data" in str(raised.value.__cause__)
    experiment = tuned.client.get_experiment_by_name("tune-failed")
    runs = tuned.client.search_runs([experiment.experiment_id])
    assert [(run.data.params["workflow"], run.info.status) for run in runs] == [("tune", "FAILED")]


def test_the_command_line_reports_a_bad_search_space_in_one_message(tuned, monkeypatch, capsys):
    monkeypatch.chdir(tuned.work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tuned.environment["MLFLOW_TRACKING_URI"])
    command = ["tune", BUNDLE, "--strategy", "salun", "--search", "{'forget_weight': [0.1, 1]}"]
    exit_code = main([*command, "--model_dir", str(tuned.models), "--experiment_name", "tune-bad"])
    assert exit_code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "medunlearn: error: SearchSpaceError: strategy 'salun' does not declare 'forget_weight'; its hyperparameters "
        "are learning_rate, unlearn_epochs, batch_size, momentum, saliency_ratio."
    )


def test_no_forgotten_subject_id_is_written_anywhere(tuned):
    scanned = 0
    for path in tuned.work.rglob("*"):
        if not path.is_file() or path.name in ("request.txt", "tissuemnist.npz"):
            continue
        content = path.read_bytes()
        scanned += 1
        assert not [subject for subject in tuned.forgotten if subject.encode() in content], path
    assert scanned > 10


def test_tradeoff_is_forget_test_distance_plus_lost_retain_quality_in_points():
    evaluation = {"retain_acc": 0.90, "forget_acc": 0.70, "test_acc": 0.60}
    assert forget_retain_tradeoff(evaluation, {"retain_acc": 0.95}) == pytest.approx(15.0)
    assert forget_retain_tradeoff(evaluation, {"retain_acc": 0.80}) == pytest.approx(10.0)  # gains are not rewarded
    segmentation = {"retain_dice": 0.8, "forget_dice": 0.5, "test_dice": 0.6}
    assert forget_retain_tradeoff(segmentation, {"retain_dice": 0.8}) == pytest.approx(10.0)
    with pytest.raises(TuningError, match="original retain_acc"):
        forget_retain_tradeoff(evaluation, {})


def test_a_retrained_model_is_a_reference_only_for_its_own_request(tmp_path):
    retrained = tmp_path / "retrained.pt"
    retrained.write_bytes(b"weights")
    assert retrained_reference(retrained, "a") is None  # no record, not evaluated
    write_json(record_path(retrained), {"forget_request_sha256": "a", "seconds": 1.0})
    assert retrained_reference(retrained, "a") is None  # not evaluated
    write_json(evaluation_path(retrained), {"forget_request_sha256": "a"})
    assert retrained_reference(retrained, "a") == retrained
    assert retrained_reference(retrained, "b") is None
    assert not Path(tmp_path / "missing.pt").exists() and retrained_reference(tmp_path / "missing.pt", "a") is None


def _with_noise_as_test_split(source: Path, target: Path) -> Path:
    """A copy of a MedMNIST file whose test images and labels are random noise."""
    arrays = dict(np.load(source))
    noise = np.random.default_rng(7)
    arrays["test_images"] = noise.integers(0, 256, arrays["test_images"].shape, dtype=np.uint8)
    arrays["test_labels"] = noise.integers(0, 8, arrays["test_labels"].shape).astype(arrays["test_labels"].dtype)
    target.parent.mkdir(parents=True)
    np.savez_compressed(target, **arrays)
    return target


def test_per_bundle_tuning_never_reads_the_test_split(tmp_path, monkeypatch):
    """Tuning on a file whose test split is noise chooses exactly as tuning on the real file: the same trials,
    objectives and values; the cost is amortised over the stated number of requests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MEDUNLEARN_SALT", "tune-salt")
    clean = write_synthetic_tissuemnist(tmp_path / "clean" / "tissuemnist.npz", n_train=96, n_val=24, n_test=40)
    noisy = _with_noise_as_test_split(clean, tmp_path / "noisy" / "tissuemnist.npz")
    common = {"batch_size": 32, "max_epochs": 1, "unlearn_epochs": 1, "experiment_name": "tune-bundle"}
    results = {}
    for name, data in (("clean", clean), ("noisy", noisy)):
        overrides = {**common, "dataset_dir": str(data.parent), "model_dir": str(tmp_path / name / "models")}
        run_workflow(BUNDLE, "train", **overrides)
        search = {name: SEARCH[name] for name in ("learning_rate", "momentum")}  # unlearn_epochs is held at 1
        results[name] = tune(
            BUNDLE, "rl", n_trials=3, search=search, mode="per_bundle", tuning_seed=5, amortise_over=20, **overrides
        )
    clean_result, noisy_result = results["clean"], results["noisy"]
    assert [trial.params for trial in clean_result.trials] == [trial.params for trial in noisy_result.trials]
    assert [trial.objective for trial in clean_result.trials] == [trial.objective for trial in noisy_result.trials]
    assert clean_result.objective == "val_gap_to_retrain" and clean_result.tuned_model is None
    provenance = clean_result.provenance
    assert provenance["amortised_over"] == 20 and provenance["seeds"] == {"seed": 0, "tuning_seed": 5}
    assert provenance["n_trials"] == 3 and provenance["data"] == "tissuemnist.npz"
    reference = read_json(record_path(tmp_path / "clean" / "models" / "tuning" / "per_bundle" / "retrained.pt"))
    assert provenance["tuning_retrain_seconds"] == reference["seconds"]
    assert provenance["tuning_seconds"] > reference["seconds"] + sum(t.unlearn_seconds for t in clean_result.trials)
    metrics = clean_result.metrics
    expected = reference["seconds"] / (clean_result.best.unlearn_seconds + metrics["tuning_seconds"] / 20)
    assert metrics["speedup_vs_retrain_incl_tuning"] == pytest.approx(expected)
    # The tuning request is drawn with its own seed, not the evaluation seed's request.
    evaluation_request = ForgetRequest.generate(load_medmnist_items(clean, "train"), 0.1, seed=0)
    assert reference["forget_request_sha256"] != evaluation_request.sha256(b"tune-salt")
    # Every trial was scored on the 24 validation images in the test split's place.
    scores = read_json(item_scores_path(clean_result.best.model))["splits"]
    assert len(scores["test"]["loss"]) == 24
