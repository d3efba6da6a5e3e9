"""Against a real ``mlflow server`` (sqlite backend, proxied artifacts) on 127.0.0.1: a bundle's workflows record
their runs over HTTP, and ``MlflowClient`` reads params, metrics, artifacts and datasets (data lineage) back."""

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

from medunlearn_monai.data.medmnist import load_medmnist_items
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.tracking import run_datasets
from medunlearn_monai.workflows import BUNDLES_DIR, run_workflow

BUNDLE = "tissuemnist_resnet_classification"
STARTUP_SECONDS = 90
SALT = "tracking-server-test-salt"


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
        yield uri, root
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
    server, _ = server
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


def test_each_run_names_its_data_by_salted_digests_and_the_store_holds_no_subject_id(server, tmp_path, monkeypatch):
    server, server_root = server
    data = write_synthetic_tissuemnist(tmp_path / "data" / "tissuemnist.npz", n_train=64, n_val=16, n_test=16)
    forgotten = [item["subject"] for item in load_medmnist_items(data, "train")[3:9]]
    request = tmp_path / "request.txt"
    request.write_text("\n".join(forgotten) + "\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MEDUNLEARN_SALT", SALT)
    models = tmp_path / "models"
    common = {"dataset_dir": str(data.parent), "model_dir": str(models), "batch_size": 16, "experiment_name": "lineage"}
    with_request = {**common, "forget_request_file": str(request)}
    run_workflow(BUNDLE, "train", **common, max_epochs=1)
    run_workflow(BUNDLE, "unlearn", "rl", **with_request, unlearn_epochs=1)
    run_workflow(BUNDLE, "evaluate", **with_request, model_path=str(models / "unlearned_rl.pt"))

    client = mlflow.MlflowClient(server)
    experiment = client.get_experiment_by_name("lineage")
    runs = {run.data.params["workflow"]: run for run in client.search_runs([experiment.experiment_id])}
    datasets = {workflow: run_datasets(run) for workflow, run in runs.items()}
    certificate = json.loads((models / "unlearned_rl.certificate.json").read_text())
    retain, forget = certificate["retain_manifest"]["sha256"], certificate["forget_request_sha256"]
    assert datasets["unlearn"] == {"retain": retain[:36], "forget": forget[:36]}  # MLflow keeps 36 characters
    assert datasets["evaluate"]["retain"] == retain[:36] and datasets["evaluate"]["forget"] == forget[:36]
    assert set(datasets["train"]) == {"train"} and datasets["train"]["train"] != retain[:36]
    assert set(datasets["evaluate"]) == {"retain", "forget", "test"}
    assert len({datasets["train"]["train"], datasets["evaluate"]["test"], retain[:36]}) == 3

    (unlearn_inputs,) = [client.get_run(runs["unlearn"].info.run_id).inputs]
    by_context = {entry.tags[0].value: entry.dataset for entry in unlearn_inputs.dataset_inputs}
    assert json.loads(by_context["retain"].profile)["sha256"] == retain  # the whole hash, in the profile
    assert json.loads(by_context["retain"].profile)["items"] == 64 - len(forgotten)
    assert json.loads(by_context["forget"].profile) | {"hashed": None} == {
        "sha256": forget, "hashed": None, "items": len(forgotten), "subjects": len(forgotten)
    }  # fmt: skip
    assert json.loads(by_context["forget"].source) == {"uri": str(data.resolve())}
    assert by_context["forget"].name == "tissuemnist.npz:forget"

    stored = [path for path in server_root.rglob("*") if path.is_file()]
    assert any(path.name == "server.db" for path in stored)
    leaks = [str(path) for path in stored for subject in forgotten if subject.encode() in path.read_bytes()]
    assert not leaks
