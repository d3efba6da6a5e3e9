"""U-LiRA and easy/hard studies end to end on tiny synthetic TissueMNIST data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest

from medunlearn_monai import tracking
from medunlearn_monai.comparison import comparison_rows
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.forget import hash_subject
from medunlearn_monai.records import file_sha256, item_scores_path, read_json
from medunlearn_monai.studies import run_difficulty_study, run_ulira_study
from medunlearn_monai.studies._runs import StudyError
from medunlearn_monai.studies.difficulty import subject_difficulty
from medunlearn_monai.studies.ulira import ulira_aucs
from medunlearn_monai.workflows import config_value, run_workflow

BUNDLE = "tissuemnist_resnet_classification"
SALT = "study-salt"


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """Original, retrained and RL-unlearned models, each evaluated; then a U-LiRA and an easy/hard study."""
    work = tmp_path_factory.mktemp("studies")
    write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=160, n_val=40, n_test=100)
    models = work / "models"
    common = {
        "dataset_dir": str(work / "data"),
        "model_dir": str(models),
        "experiment_name": "studies",
        "batch_size": 32,
        "max_epochs": 3,  # every workflow, targets and shadows alike, so the shadows mirror the targets' recipe
        "unlearn_epochs": 3,
        "network_def#widen_factor": 0.5,  # half-width ResNet-18: what is asserted here holds at any width
    }
    request = {"forget_fraction": 0.1}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        patch.setenv("MEDUNLEARN_SALT", SALT)
        run_workflow(BUNDLE, "train", **common)
        run_workflow(BUNDLE, "train", **common, **request)
        run_workflow(BUNDLE, "unlearn", "rl", **common, **request)
        for model in ("model", "retrained", "unlearned_rl"):
            run_workflow(BUNDLE, "evaluate", **common, **request, model_path=str(models / f"{model}.pt"))
        original_hash = file_sha256(models / "model.pt")
        ulira = run_ulira_study(BUNDLE, ["rl"], 2, **common, **request)
        rows = run_difficulty_study(BUNDLE, ["rl"], 0.2, **common)
        train_items = config_value(BUNDLE, "train_items", **common)
    return {
        "work": work,
        "models": models,
        "ulira": ulira,
        "rows": rows,
        "original_hash": original_hash,
        "train_items": train_items,
    }


def _runs(work: Path, workflow: str | None = None):
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("studies").experiment_id])
    return client, [run for run in runs if workflow is None or run.data.params.get("workflow") == workflow]


def test_ulira_scores_the_strategy_and_nests_its_shadow_runs(targets):
    # Two shadow pairs of 3-epoch models make the AUC's value noise, so only that it is an AUC is asserted here; its
    # computation is tested on known cases in tests/metrics/test_ulira.py. The seconds show that the cost is logged.
    assert 0.0 <= targets["ulira"]["ulira_auc_rl"] <= 1.0
    assert targets["ulira"]["ulira_shadow_pairs"] == 2 and targets["ulira"]["ulira_seconds"] > 0
    _, [study] = _runs(targets["work"], "ulira")
    assert study.info.status == "FINISHED"
    assert study.data.metrics["ulira_auc_rl"] == pytest.approx(targets["ulira"]["ulira_auc_rl"])
    _, runs = _runs(targets["work"])
    children = [run for run in runs if run.data.tags.get(tracking.PARENT_RUN_TAG) == study.info.run_id]
    assert len(children) == 2 * 5  # per pair: original, retrain, unlearn, 2 evaluations
    assert {run.data.params["seed"] for run in children} == {"1", "2"}
    for pair in (1, 2):  # shadow models learn the same forget items as the targets
        shadow = read_json(
            item_scores_path(targets["work"] / "models" / "ulira_shadows" / f"pair_{pair}" / "retrained.pt")
        )
        target = read_json(item_scores_path(targets["models"] / "retrained.pt"))
        assert shadow["splits"]["forget"]["subject_sha256"] == target["splits"]["forget"]["subject_sha256"]


def test_the_comparison_table_ignores_study_runs(targets):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{targets['work'] / 'mlflow.db'}")
        rows = {row["method"]: row for row in comparison_rows("studies")}
    assert rows["rl"]["forget_acc"] == pytest.approx(
        read_json(targets["models"] / "unlearned_rl.eval.json")["forget_acc"]
    )


def test_a_model_indistinguishable_from_retraining_scores_chance(targets, tmp_path):
    models, shadows = targets["models"], sorted((targets["models"] / "ulira_shadows").glob("pair_*"))
    for suffix in (".pt", ".items.json"):
        shutil.copy(models / f"retrained{suffix}", tmp_path / f"retrained{suffix}")
        shutil.copy(models / f"retrained{suffix}", tmp_path / f"unlearned_rl{suffix}")
    assert ulira_aucs(tmp_path, shadows, ["rl"])["ulira_auc_rl"] == pytest.approx(0.5)


def test_difficulty_study_forgets_easy_and_hard_subjects_and_logs_the_gaps(targets):
    rows = {row["quantile"]: row for row in targets["rows"]}
    assert set(rows) == {"easy", "hard"} and all("gap_to_retrain" in row for row in rows.values())
    difficulty = subject_difficulty(targets["models"] / "model.pt", targets["train_items"], SALT.encode())
    by_hash = {hash_subject(subject, SALT.encode()): loss for subject, loss in difficulty.items()}
    mean_loss = {}
    for quantile in rows:
        scores = read_json(item_scores_path(targets["models"] / "difficulty" / quantile / "retrained.pt"))
        forgotten = set(scores["splits"]["forget"]["subject_sha256"])
        assert len(forgotten) == round(0.2 * len(difficulty))
        mean_loss[quantile] = np.mean([by_hash[subject] for subject in forgotten])
    assert mean_loss["easy"] < mean_loss["hard"]
    client, [study] = _runs(targets["work"], "difficulty")
    assert study.data.metrics["gap_to_retrain_hard_rl"] == pytest.approx(rows["hard"]["gap_to_retrain"])
    table = Path(client.download_artifacts(study.info.run_id, "tables/difficulty_gaps.json"))
    assert json.loads(table.read_text()) == targets["rows"]
    assert not any(item["subject"] in table.read_text() for item in targets["train_items"])


def test_studies_leave_the_original_model_untouched(targets):
    assert file_sha256(targets["models"] / "model.pt") == targets["original_hash"]


def test_bad_study_arguments_fail_before_any_training(targets, tmp_path):
    common = {"dataset_dir": str(targets["work"] / "data"), "experiment_name": "studies-errors"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        patch.setenv("MEDUNLEARN_SALT", SALT)
        with pytest.raises(StudyError, match="at least 2 shadow pairs"):
            run_ulira_study(BUNDLE, ["rl"], 1, model_dir=str(targets["models"]), forget_fraction=0.1, **common)
        with pytest.raises(StudyError, match="forget request"):
            run_ulira_study(BUNDLE, ["rl"], 2, model_dir=str(targets["models"]), **common)
        with pytest.raises(StudyError, match="run the evaluate workflow"):
            run_ulira_study(BUNDLE, ["rl"], 2, model_dir=str(tmp_path), forget_fraction=0.1, **common)
        with pytest.raises(StudyError, match="run the evaluate workflow"):
            run_difficulty_study(BUNDLE, ["rl"], 0.2, model_dir=str(tmp_path), **common)
    assert not (tmp_path / "mlflow.db").exists() or not mlflow.MlflowClient(
        f"sqlite:///{tmp_path / 'mlflow.db'}"
    ).get_experiment_by_name("studies-errors")
