"""Against a real ``mlflow server`` (sqlite backend, proxied artifacts) on 127.0.0.1: a bundle's train and evaluate
workflows record their runs over HTTP, and ``MlflowClient`` reads params, metrics and artifacts back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.workflows import BUNDLES_DIR, run_workflow

BUNDLE = "tissuemnist_resnet_classification"
STARTUP_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A tracking server in its own process group, stopped (with its workers) after the module's tests."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed in the teardown below
    environment = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    process = subprocess.Popen(command, cwd=root, env=environment, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(f"{uri}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (root / "server.log").read_text(errors="replace")[-2000:]
                pytest.skip(f"mlflow server did not start (exit code {process.poll()}): {tail}")
            time.sleep(0.5)
        yield uri
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the group this fixture started: the server and its workers
            try:
                process.wait(timeout=2)  # a graceful stop would wait for this process's idle keep-alive connections
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def test_workflows_record_their_runs_on_a_real_tracking_server(server, tmp_path, monkeypatch):
    data = write_synthetic_tissuemnist(tmp_path / "data" / "tissuemnist.npz", n_train=64, n_val=16, n_test=16)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    common = {"dataset_dir": str(data.parent), "model_dir": str(tmp_path / "models"), "batch_size": 16}
    run_workflow(BUNDLE, "train", **common, max_epochs=2, experiment_name="server-e2e")
    run_workflow(BUNDLE, "evaluate", **common, experiment_name="server-e2e")

    client = mlflow.MlflowClient(server)
    experiment = client.get_experiment_by_name("server-e2e")
    runs = {run.data.params["workflow"]: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["evaluate", "train"]
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    train = runs["train"]
    assert train.data.params["bundle"] == BUNDLE and train.data.params["max_epochs"] == "2"
    assert [metric.step for metric in client.get_metric_history(train.info.run_id, "val_acc")] == [1, 2]
    written = json.loads((tmp_path / "models" / "model.eval.json").read_text())
    assert runs["evaluate"].data.metrics["test_acc"] == pytest.approx(written["test_acc"])
    artifacts = {entry.path for entry in client.list_artifacts(train.info.run_id, "config")}
    assert "config/train.json" in artifacts
    local = Path(client.download_artifacts(train.info.run_id, "config/train.json", str(tmp_path)))
    assert local.read_text() == (BUNDLES_DIR / BUNDLE / "configs" / "train.json").read_text()
    plots = {entry.path for entry in client.list_artifacts(train.info.run_id, "plots")}
    assert plots == {"plots/metrics_by_epoch.png"}
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()  # all went to the server
