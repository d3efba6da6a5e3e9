"""The several-seed protocol: aggregation by hand, the noise floor, MLflow nesting and resuming after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from medunlearn_monai import tracking, workflows
from medunlearn_monai.cli import main
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.records import evaluation_path, item_scores_path, read_json, record_path, write_json
from medunlearn_monai.studies import run_protocol
from medunlearn_monai.studies._runs import StudyError
from medunlearn_monai.studies.protocol import (
    LEDGER,
    NOISE_FLOOR,
    SHADOW_SEED_OFFSET,
    _rerun_settings,
    method_rows,
    protocol_steps,
    record_finished,
    summarise,
    tuning_charge,
)

BUNDLE = "tissuemnist_resnet_classification"


def test_summary_is_the_mean_and_sample_std_over_seeds():
    rows = [
        {"seed": 0, "forget_fraction": 0.1, "method": "rl", "gap_to_retrain": 2.0, "test_acc": 0.70},
        {"seed": 1, "forget_fraction": 0.1, "method": "rl", "gap_to_retrain": 4.0, "test_acc": 0.80},
        {"seed": 2, "forget_fraction": 0.1, "method": "rl", "gap_to_retrain": 9.0, "test_acc": 0.75},
        {"seed": 0, "forget_fraction": 0.5, "method": "rl", "gap_to_retrain": 1.0, "test_acc": float("nan")},
    ]
    summary = summarise(rows)
    entry = summary["0.1"]["rl"]
    assert entry["seeds"] == 3
    assert entry["gap_to_retrain_mean"] == pytest.approx(5.0)
    # sample standard deviation: sqrt(((2-5)^2 + (4-5)^2 + (9-5)^2) / 2) = sqrt(13)
    assert entry["gap_to_retrain_std"] == pytest.approx(13**0.5)
    assert entry["test_acc_mean"] == pytest.approx(0.75) and entry["test_acc_std"] == pytest.approx(0.05)
    single = summary["0.5"]["rl"]
    assert single["gap_to_retrain_mean"] == 1.0 and single["gap_to_retrain_std"] is None
    assert "test_acc_mean" not in single  # an undefined value is left out, not averaged as NaN


def _model(folder: Path, name: str, evaluation: dict, seconds: float | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.pt").write_bytes(b"weights")
    write_json(evaluation_path(folder / f"{name}.pt"), evaluation)
    write_json(record_path(folder / f"{name}.pt"), {"seconds": seconds} if seconds else {})


def test_method_rows_score_every_model_against_the_first_retraining(tmp_path):
    _model(tmp_path, "model", {"test_acc": 0.80, "forget_acc": 1.0})
    _model(tmp_path, "retrained", {"test_acc": 0.78, "forget_acc": 0.75, "mia_loss_auc": 0.52}, seconds=100.0)
    _model(tmp_path, "retrained_noise", {"test_acc": 0.77, "gap_to_retrain": 1.5, "mia_loss_auc": 0.51}, seconds=90.0)
    _model(tmp_path, "unlearned_rl", {"test_acc": 0.72, "gap_to_retrain": 4.0, "mia_loss_auc": 0.60}, seconds=10.0)
    tuning = {"rl": {"tuning_seconds": 300.0, "tuning_retrain_seconds": 60.0, "amortised_over": 10}}
    rows = {row["method"]: row for row in method_rows(tmp_path, 3, 0.1, ["rl"], tuning)}
    assert list(rows) == ["original", "retrain", NOISE_FLOOR, "rl"]
    assert rows[NOISE_FLOOR]["gap_to_retrain"] == 1.5 and rows[NOISE_FLOOR]["speedup"] == pytest.approx(100 / 90)
    assert rows["rl"]["speedup"] == pytest.approx(10.0)
    # tuning cost 5 retrainings of the tuning set-up, over 10 requests: each pays half of its own retraining (50 s)
    assert rows["rl"]["tuning_charge_seconds"] == pytest.approx(50.0)
    assert rows["rl"]["speedup_incl_tuning"] == pytest.approx(100 / 60)
    assert rows["rl"]["test_drop_vs_retrain"] == pytest.approx(6.0)
    assert rows["retrain"]["test_drop_vs_retrain"] == 0.0 and "seconds" not in rows["original"]
    assert tuning_charge({"note": "set by hand, not tuned"}, 100.0) == 0.0


def test_noise_floor_step_keeps_the_request_and_changes_only_the_seed(tmp_path):
    steps = {step.key: step for step in protocol_steps(tmp_path, 2, [0.25], ["rl"], {"batch_size": 8}, {})}
    retrain, noise = steps["seed_2/forget_0.25/retrain"], steps["seed_2/forget_0.25/noise_floor"]
    assert retrain.overrides["seed"] == 2 and "data_seed" not in retrain.overrides  # data_seed follows seed
    assert noise.overrides["seed"] == 1002 and noise.overrides["data_seed"] == 2
    assert noise.overrides["forget_fraction"] == retrain.overrides["forget_fraction"] == 0.25
    assert list(steps)[0] == "seed_2/original" and "forget_fraction" not in steps["seed_2/original"].overrides
    order = list(steps)
    folder = "seed_2/forget_0.25"
    assert order.index(f"{folder}/evaluate_retrained") < order.index(f"{folder}/evaluate_unlearned_rl")


def test_a_killed_training_resumes_and_a_stale_one_replaces_its_model(tmp_path):
    steps = {step.key: step for step in protocol_steps(tmp_path, 0, [0.25], ["rl"], {}, {})}
    retrain, evaluate = steps["seed_0/forget_0.25/retrain"], steps["seed_0/forget_0.25/evaluate_retrained"]
    assert _rerun_settings(retrain) == {}
    checkpoints = retrain.output.with_suffix(".checkpoints")
    checkpoints.mkdir(parents=True)
    (checkpoints / "checkpoint_3.pt").write_bytes(b"")
    assert _rerun_settings(retrain) == {"resume": True}
    retrain.output.write_bytes(b"")  # a model the ledger does not hold as finished with these settings
    assert _rerun_settings(retrain) == {"resume": True, "overwrite": True}
    assert _rerun_settings(evaluate) == {}  # evaluation keeps no checkpoints and replaces no model


def test_protocols_sharing_a_work_folder_keep_each_others_finished_steps(tmp_path):
    seed_0 = protocol_steps(tmp_path, 0, [0.25], ["rl"], {}, {})
    seed_2 = protocol_steps(tmp_path, 2, [0.25], ["rl"], {}, {})
    ledger = tmp_path / LEDGER
    record_finished(ledger, seed_0[0])
    record_finished(ledger, seed_2[0])  # another process, which read the ledger before seed 0's step finished
    after = record_finished(ledger, seed_0[1])
    assert after == read_json(ledger)
    assert set(after) == {seed_0[0].key, seed_2[0].key, seed_0[1].key}
    assert after[seed_2[0].key] == seed_2[0].signature()


def test_ulira_shadow_pairs_retrain_on_the_headline_request_with_their_own_seeds(tmp_path):
    steps = {
        step.key: step
        for step in protocol_steps(tmp_path, 2, [0.25, 0.5], ["rl"], {"batch_size": 8}, {"max_epochs": 3}, 2)
    }
    pairs = {key for key in steps if "/ulira_pair_" in key}
    assert pairs and all(key.startswith("seed_2/forget_0.25/ulira_pair_") for key in pairs)  # headline only
    for pair in (1, 2):
        key = f"seed_2/forget_0.25/ulira_pair_{pair}"
        shadow_seed = 2 + SHADOW_SEED_OFFSET + pair
        original, retrain, noise = (steps[f"{key}/{name}"] for name in ("original", "retrain", "noise_floor"))
        assert original.overrides["seed"] == retrain.overrides["seed"] == shadow_seed
        assert "forget_fraction" not in original.overrides and original.overrides["max_epochs"] == 3
        assert retrain.overrides["forget_fraction"] == 0.25 and retrain.overrides["data_seed"] == 2
        assert noise.overrides["seed"] == shadow_seed + 1000 and noise.overrides["data_seed"] == 2
        unlearn = steps[f"{key}/unlearn_rl"]
        assert unlearn.overrides["seed"] == shadow_seed and "max_epochs" not in unlearn.overrides
        assert unlearn.overrides["model_dir"] == str(tmp_path / "seed_2" / "forget_0.25" / "ulira" / f"pair_{pair}")
        assert {f"{key}/evaluate_{name}" for name in ("retrained", "retrained_noise", "unlearned_rl")} <= set(steps)


def _scores(model: Path, confidence: list[float]) -> None:
    subjects = [f"s{index}" for index in range(len(confidence))]
    split = {"subject_sha256": subjects, "confidence": confidence, "loss": [0.0] * len(confidence)}
    write_json(item_scores_path(model), {"forget_request_sha256": "r", "splits": {"forget": split}})


def test_method_rows_carry_ulira_aucs_of_the_strategies_and_the_noise_floor(tmp_path):
    """Shadow pairs where unlearned models stay confident (0.9) and retrained ones do not (0.3): a target that
    stays confident is caught (AUC 1); a second retraining looks like the first (AUC 0.5, no signal)."""
    _model(tmp_path, "model", {"test_acc": 0.80})
    _model(tmp_path, "retrained", {"test_acc": 0.78}, seconds=100.0)
    _model(tmp_path, "retrained_noise", {"test_acc": 0.77, "gap_to_retrain": 1.0}, seconds=100.0)
    _model(tmp_path, "unlearned_rl", {"test_acc": 0.75, "gap_to_retrain": 3.0}, seconds=10.0)
    retrained = [0.30, 0.32, 0.28, 0.31]
    _scores(tmp_path / "retrained.pt", retrained)
    _scores(tmp_path / "retrained_noise.pt", retrained)
    _scores(tmp_path / "unlearned_rl.pt", [0.90, 0.91, 0.89, 0.92])
    for pair, shift in ((1, 0.01), (2, -0.01)):
        folder = tmp_path / "ulira" / f"pair_{pair}"
        folder.mkdir(parents=True)
        for name, confidence in (("retrained", 0.3), ("retrained_noise", 0.3), ("unlearned_rl", 0.9)):
            _scores(folder / f"{name}.pt", [confidence + shift + 0.01 * item for item in range(4)])
    rows = {row["method"]: row for row in method_rows(tmp_path, 0, 0.1, ["rl"])}
    assert rows["rl"]["ulira_auc"] == pytest.approx(1.0)
    assert rows[NOISE_FLOOR]["ulira_auc"] == pytest.approx(0.5)  # identical confidences: ties all round
    assert "ulira_auc" not in rows["retrain"] and "ulira_auc" not in rows["original"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"seeds": []}, "distinct seeds"),
        ({"seeds": [0, 0]}, "distinct seeds"),
        ({"seeds": [0, 1000]}, "noise-floor seeds"),
        ({"forget_fractions": [1.0]}, "between 0 and 1"),
        ({"strategies": ["nope"]}, "unknown strategies nope"),
        ({"forget_request_file": "request.txt"}, "random request per seed"),
        ({"ulira_shadow_pairs": 1}, "at least 2 shadow pairs"),
    ],
)
def test_bad_protocol_arguments_fail_before_any_run(arguments, message):
    with pytest.raises(StudyError, match=message):
        run_protocol(BUNDLE, **arguments)
    assert not Path("mlflow.db").exists()


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory):
    """Two seeds of original, retrain, noise floor and FT on tiny data; seed 1 crashes once and is resumed."""
    work = tmp_path_factory.mktemp("protocol")
    write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=120, n_val=40, n_test=80)
    common = {
        "dataset_dir": str(work / "data"),
        "model_dir": str(work / "models"),
        "experiment_name": "protocol",
        "batch_size": 32,
    }
    calls: list[dict] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        patch.setenv("MEDUNLEARN_SALT", "protocol-salt")
        real_run = workflows.run_workflow

        def crash_in_seed_1(bundle, workflow, strategy=None, **overrides):
            if overrides.get("seed") == 1:
                raise RuntimeError("power cut")
            real_run(bundle, workflow, strategy, **overrides)

        patch.setattr(workflows, "run_workflow", crash_in_seed_1)
        with pytest.raises(RuntimeError, match="power cut"):
            run_protocol(BUNDLE, ["ft"], [0, 1], [0.2], train_epochs=1, **common)

        def counting(bundle, workflow, strategy=None, **overrides):
            calls.append({"workflow": workflow, "strategy": strategy, **overrides})
            real_run(bundle, workflow, strategy, **overrides)

        patch.setattr(workflows, "run_workflow", counting)
        code = main(
            ["protocol", BUNDLE, "--strategies", "ft", "--seeds", "0,1", "--forget_fractions", "0.2",
             "--train_epochs", "1", *(f"--{key}={value}" for key, value in common.items())]
        )  # fmt: skip
        assert code == 0
        result = run_protocol(BUNDLE, ["ft"], [0, 1], [0.2], train_epochs=1, **common)
    return {"work": work, "calls": calls, "result": result}


def test_resumed_protocol_redoes_no_finished_seed(protocol_run):
    calls = protocol_run["calls"]
    # the interrupted run finished seed 0 (8 steps); the resumed run ran seed 1's 8 steps only, the last run none
    assert len(calls) == 8
    assert {call["seed"] for call in calls} == {1, 1 + 1000}
    assert [call["workflow"] for call in calls[:3]] == ["train", "train", "train"]


def test_protocol_aggregate_matches_the_evaluations_on_disk(protocol_run):
    work, result = protocol_run["work"], protocol_run["result"]
    folders = [work / "models" / "protocol" / f"seed_{seed}" / "forget_0.2" for seed in (0, 1)]
    gaps = [read_json(evaluation_path(folder / "unlearned_ft.pt"))["gap_to_retrain"] for folder in folders]
    floors = [read_json(evaluation_path(folder / "retrained_noise.pt"))["gap_to_retrain"] for folder in folders]
    entry, floor = result.summary["0.2"]["ft"], result.summary["0.2"][NOISE_FLOOR]
    assert entry["gap_to_retrain_mean"] == pytest.approx(np.mean(gaps))
    assert entry["gap_to_retrain_std"] == pytest.approx(np.std(gaps, ddof=1))
    assert floor["gap_to_retrain_mean"] == pytest.approx(np.mean(floors)) and floor["seeds"] == 2
    assert {"mia_loss_auc_mean", "test_acc_mean", "speedup_mean"} <= set(floor)
    # the noise-floor model is a real second retraining: other weights, same forget request
    for folder in folders:
        first, second = (read_json(record_path(folder / name)) for name in ("retrained.pt", "retrained_noise.pt"))
        assert first["model_sha256"] != second["model_sha256"]
        assert first["forget_request_sha256"] == second["forget_request_sha256"] != "none"
    requests = {read_json(record_path(folder / "retrained.pt"))["forget_request_sha256"] for folder in folders}
    assert len(requests) == 2  # each seed draws its own request


def test_protocol_runs_are_children_of_one_protocol_run(protocol_run):
    client = mlflow.MlflowClient(f"sqlite:///{protocol_run['work'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("protocol")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if run.data.params.get("workflow") == "protocol"]
    final = next(run for run in parents if run.info.run_id == protocol_run["result"].run_id)
    assert final.info.status == "FINISHED"
    assert final.data.metrics["ft_gap_to_retrain_mean"] == pytest.approx(
        protocol_run["result"].summary["0.2"]["ft"]["gap_to_retrain_mean"]
    )
    run_id = final.info.run_id
    artifacts = {item.path for folder in ("tables", "plots") for item in client.list_artifacts(run_id, folder)}
    assert {"tables/protocol_summary.json", "tables/protocol_rows.json", "plots/gap_vs_speedup.png"} <= artifacts
    assert {run.info.status for run in parents} == {"FAILED", "FINISHED"}  # the crashed run is marked as such
    children = [run for run in runs if run.data.tags.get(tracking.PARENT_RUN_TAG) in {p.info.run_id for p in parents}]
    assert len(children) == 16  # 2 seeds x (original, retrain, noise floor, FT, 4 evaluations)
    summary = json.loads(Path(client.download_artifacts(final.info.run_id, "tables/protocol_summary.json")).read_text())
    assert summary["0.2"]["ft"]["seeds"] == 2
