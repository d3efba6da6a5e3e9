import os
import socket
import time

import mlflow
import pytest
from known_datasets import KnownDatasets

from medunlearn_monai.comparison import comparison_rows, data_summary
from medunlearn_monai.tracking import (
    RESUMED_FROM_TAG,
    MLflowTracker,
    TrackingServerUnreachable,
    fail_open_runs,
    tracking_uri,
)


def _runs():
    client = mlflow.MlflowClient(tracking_uri())
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(experiments)


def test_run_logs_params_and_metrics_and_ends_finished(isolated_workdir):
    tracker = MLflowTracker("exp", "train-original", params={"workflow": "train", "lr": 0.1, "unset": None})
    tracker.start()
    tracker.log_metrics({"val_acc": 0.5, "not_a_number": float("nan"), "label": "text"}, step=2)
    tracker.end()
    (run,) = _runs()
    assert run.info.status == "FINISHED"
    assert run.data.params == {"workflow": "train", "lr": "0.1"}
    assert run.data.metrics == {"val_acc": 0.5}
    assert (isolated_workdir / "mlflow.db").is_file()


def test_a_disabled_tracker_opens_no_store_and_logs_nothing(isolated_workdir):
    tracker = MLflowTracker("exp", "train-original", params={"workflow": "train"}, enabled=False)
    assert tracker.start() is None
    (isolated_workdir / "file.txt").write_text("artifact")
    tracker.log_metrics({"val_acc": 0.5})
    tracker.log_params({"best": 1})
    tracker.log_artifact(isolated_workdir / "file.txt")
    tracker.end()
    assert not (isolated_workdir / "mlflow.db").exists()


def test_a_resumed_run_ends_only_a_still_running_interrupted_run_and_names_it():
    client = mlflow.MlflowClient(tracking_uri())
    experiment = client.create_experiment("exp")
    killed, failed = (client.create_run(experiment).info.run_id for _ in range(2))  # as a killed process left them
    client.set_terminated(failed, "FAILED")
    for interrupted in (killed, failed, "0123456789abcdef"):  # the last one is in no store here
        resumed = MLflowTracker("exp", "unlearn-rl")
        resumed.start()
        resumed.mark_resumed_from(interrupted)
        resumed.end()
        assert client.get_run(resumed.run_id).data.tags[RESUMED_FROM_TAG] == interrupted
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(failed).info.status == "FAILED"


def test_runs_left_open_are_marked_failed():
    tracker = MLflowTracker("exp", "unlearn-rl")
    tracker.start()
    fail_open_runs()
    tracker.end()  # already ended: no change
    assert [run.info.status for run in _runs()] == ["FAILED"]


def test_comparison_takes_the_latest_finished_evaluation_per_strategy():
    for strategy, acc in [("rl", 0.1), ("rl", 0.2), ("retrain", 0.3), ("original", 0.9)]:
        tracker = MLflowTracker("exp", f"evaluate-{strategy}", params={"workflow": "evaluate", "strategy": strategy})
        tracker.start()
        tracker.log_metrics({"forget_acc": acc})
        tracker.end()
    rows = comparison_rows("exp")
    assert [row["method"] for row in rows] == ["original", "retrain", "rl"]
    assert rows[2]["forget_acc"] == 0.2 and rows[2]["gap_to_retrain"] is None


def test_comparison_of_unknown_experiment_fails_clearly():
    with pytest.raises(ValueError, match="experiment 'nope' at .* does not exist"):
        comparison_rows("nope")


def test_finished_run_gets_a_plot_of_its_per_epoch_metrics():
    tracker = MLflowTracker("exp", "train-original")
    tracker.start()
    for epoch in (1, 2, 3):
        tracker.log_metrics({"train_loss": 1.0 / epoch, "val_acc": 0.2 * epoch}, step=epoch)
    tracker.log_metrics({"train_seconds": 12.0})
    tracker.end()
    client = mlflow.MlflowClient(tracking_uri())
    (run,) = _runs()
    assert [entry.path for entry in client.list_artifacts(run.info.run_id, "plots")] == ["plots/metrics_by_epoch.png"]
    local = client.download_artifacts(run.info.run_id, "plots/metrics_by_epoch.png")
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_an_unreachable_tracking_server_fails_at_start_quickly(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    started = time.monotonic()
    with pytest.raises(TrackingServerUnreachable, match=rf"127.0.0.1:{port} does not answer \(\[Errno \d+\] Conn"):
        MLflowTracker("exp", "train-original").start()
    assert time.monotonic() - started < 15
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"  # the quick check leaves the user's settings
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_a_run_logs_its_datasets_and_the_comparison_shows_their_digests(isolated_workdir):
    retain, forget, test = "3f2a9c01" + "0" * 28, "88be0d4e" + "1" * 28, "c0ffee00" + "2" * 28
    datasets = KnownDatasets({"test": test, "forget": forget, "retain": retain})
    params = {"workflow": "evaluate", "strategy": "rl"}
    tracker = MLflowTracker("exp", "evaluate-rl", params=params, datasets=datasets)
    tracker.start()
    tracker.end()
    (run,) = _runs()
    contexts = {entry.tags[0].value: entry.dataset.digest for entry in run.inputs.dataset_inputs}
    assert contexts == {"retain": retain, "forget": forget, "test": test}
    (row,) = comparison_rows("exp")
    assert row["data"] == "retain 3f2a9c01 · forget 88be0d4e · test c0ffee00" == data_summary(run)
    untracked = MLflowTracker("other", "evaluate-ft", params={"workflow": "evaluate", "strategy": "ft"})
    untracked.start()
    untracked.end()
    assert comparison_rows("other")[0]["data"] is None
