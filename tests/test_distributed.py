"""Two processes under torchrun (gloo, CPU) train and unlearn like one process with the same global batch.

Both runs read the items in order (the one-process loader unshuffled; the ``DistributedSampler`` unshuffled deals item
``i`` to rank ``i % 2``), so every step sees the same 32 items, and DDP all-reduces the gradient to their mean. They are
close, not identical: BatchNorm normalises each rank's 16 items with their own statistics, the saved model keeps rank
0's running statistics, and RandomRelabel (SalUn) draws the wrong labels of each rank's forget items from its own copy
of the seeded generator. So the training loss may differ by :data:`LOSS_TOLERANCE` and the validation accuracy, on 128
images of a model one epoch old, by :data:`ACCURACY_TOLERANCE` (8 images); measured on CPU: 0.008 and 3 images after
training, 0.010 and 2 images after SalUn.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import monai.bundle
import pytest
import torch
from ignite.handlers import ProgressBar

from medunlearn_monai import distributed
from medunlearn_monai.data.medmnist import load_medmnist_items
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.forget import ForgetRequest
from medunlearn_monai.model_io import ModelWriter
from medunlearn_monai.records import read_json
from medunlearn_monai.workflows import BUNDLES_DIR, MULTI_GPU_WORKFLOWS, bundle_dir, config_files, run_workflow

BUNDLE = "tissuemnist_resnet_classification"
SETTINGS = {"batch_size": 32, "max_epochs": 1, "unlearn_epochs": 1, "learning_rate": 0.01, "momentum": 0.0}
LOSS_TOLERANCE = 0.05
ACCURACY_TOLERANCE = 0.0625
EXPERIMENTS = {"one": "one-process", "two": "two-processes"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(work: Path, module_arguments: list[str], environment: dict[str, str], logs: Path) -> None:
    """Run ``python -m <module_arguments>`` in two gloo processes; each rank's output goes to ``logs``."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "--log-dir", str(logs), "--redirects", "3", "-m", *module_arguments,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True, timeout=300)
    ranks = "\n".join(f"--- {path}\n{path.read_text()[-3000:]}" for path in sorted(logs.rglob("stderr.log")))
    assert result.returncode == 0, f"{result.stderr[-2000:]}\n{ranks}"


def as_arguments(overrides: dict) -> list[str]:
    return [text for key, value in overrides.items() for text in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train, then unlearn with SalUn from the one-process model, in one process and in two; returns the folder."""
    work = tmp_path_factory.mktemp("distributed")
    data = write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=128, n_val=128, n_test=8)
    forgotten = ForgetRequest.generate(load_medmnist_items(data, "train"), 0.125, seed=0).subject_ids
    (work / "request.txt").write_text("\n".join(forgotten) + "\n")
    environment = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MEDUNLEARN_SALT": "ddp-salt"}
    common = {"dataset_dir": str(work / "data"), **SETTINGS}
    unlearn = {**common, "forget_request_file": str(work / "request.txt"), "original_model": str(work / "one/model.pt")}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for key, value in environment.items():
            patch.setenv(key, value)
        one = {"model_dir": str(work / "one"), "experiment_name": EXPERIMENTS["one"], "train#dataloader#shuffle": False}
        run_workflow(BUNDLE, "train", **common, **one)
        run_workflow(BUNDLE, "unlearn", "salun", **unlearn, **one)
    two = {"model_dir": str(work / "two"), "experiment_name": EXPERIMENTS["two"], "train#sampler#shuffle": False}
    environment = {**os.environ, **environment, "OMP_NUM_THREADS": "1"}
    configs = bundle_dir(BUNDLE) / "configs"
    bundle_run = ["monai.bundle", "run", "--config_file", str(config_files(BUNDLE, "train", multi_gpu=True))]
    bundle_run += ["--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf")]
    bundle_run += ["--bundle_root", str(bundle_dir(BUNDLE)), *as_arguments({**common, **two})]
    torchrun(work, bundle_run, environment, work / "logs" / "train")
    cli_run = ["medunlearn_monai.cli", "run", BUNDLE, "unlearn", "--strategy", "salun", "--multi_gpu"]
    torchrun(work, cli_run + as_arguments({**unlearn, **two}), environment, work / "logs" / "unlearn")
    return work


def final_metrics(work: Path) -> dict[tuple[str, str], dict[str, float]]:
    """The last logged metrics of every run, by (process count, workflow)."""
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    metrics = {}
    for processes, name in EXPERIMENTS.items():
        for run in client.search_runs([client.get_experiment_by_name(name).experiment_id]):
            metrics[processes, run.data.params["workflow"]] = run.data.metrics
    return metrics


@pytest.mark.parametrize("workflow", ["train", "unlearn"])
def test_two_processes_end_close_to_one_with_the_same_global_batch(runs, workflow):
    metrics = final_metrics(runs)
    one, two = metrics["one", workflow], metrics["two", workflow]
    assert abs(one["train_loss"] - two["train_loss"]) <= LOSS_TOLERANCE
    assert abs(one["val_acc"] - two["val_acc"]) <= ACCURACY_TOLERANCE
    assert "samples_per_second" in two  # logged by the two-process run too; its value is timing, not tested


def test_every_rank_derives_the_saliency_mask_of_one_process(runs):
    source = torch.load(runs / "one" / "model.pt", weights_only=True)
    weights = [name for name, value in source.items() if value.is_floating_point() and "running" not in name]
    changed = {}
    for processes in ("one", "two"):
        unlearned = torch.load(runs / processes / "unlearned_salun.pt", weights_only=True)
        changed[processes] = torch.cat([(source[name] != unlearned[name]).flatten() for name in weights])
    # saliency_ratio 0.5: a salient weight may keep its value (an update below float precision), none other may
    # change. Two different masks would together change more than half of the weights.
    assert (changed["one"] | changed["two"]).sum() <= round(0.5 * changed["one"].numel())
    assert changed["two"].sum() > 0.45 * changed["two"].numel()


def test_rank_zero_alone_logs_writes_and_prints(runs):
    client = mlflow.MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENTS["two"])
    distributed_runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.params["workflow"] for run in distributed_runs) == ["train", "unlearn"]
    assert {run.info.status for run in distributed_runs} == {"FINISHED"}
    assert {run.data.params["world_size"] for run in distributed_runs} == {"2"}
    assert {run.data.params["batch_size"] for run in distributed_runs} == {"32"}  # the global batch
    assert len(list((runs / "mlruns" / experiment.experiment_id).iterdir())) == 2
    written = sorted(path.name for path in (runs / "two").iterdir())
    assert written == [
        "model.json",
        "model.pt",
        "unlearned_salun.certificate.json",
        "unlearned_salun.json",
        "unlearned_salun.pt",
    ]
    assert read_json(runs / "two" / "unlearned_salun.json")["world_size"] == 2
    for workflow in ("train", "unlearn"):
        consoles = {path.parent.name: path.read_text() for path in (runs / "logs" / workflow).rglob("stderr.log")}
        assert {rank: "100%|" in console for rank, console in consoles.items()} == {"0": True, "1": False}


@pytest.mark.parametrize(
    "bundle", sorted(path.parent.parent.name for path in BUNDLES_DIR.glob("*/configs/unlearn.json"))
)
def test_multi_gpu_configs_restate_what_they_wrap_as_the_workflow_has_it(bundle):
    # Like model-zoo's, the files repeat a few expressions of the configs they override: a change there goes here too.
    # The ordered initialize steps are stated once per workflow (initialize_steps); multi-GPU runs them after joining
    # the process group and appends its own finalize step.
    assert len(list((BUNDLES_DIR / bundle / "configs").glob("multi_gpu_*.json"))) == len(MULTI_GPU_WORKFLOWS)
    for workflow, strategy in (("train", None), ("unlearn", "ft")):
        alone = monai.bundle.ConfigParser.load_config_files(config_files(bundle, workflow, strategy))
        layered = monai.bundle.ConfigParser.load_config_files(config_files(bundle, workflow, strategy, multi_gpu=True))
        assert alone["initialize"] == "@initialize_steps"
        assert layered["initialize"] == ["$distributed.initialize()", "@initialize_steps"]
        assert layered["initialize_steps"] == alone["initialize_steps"]
        assert layered["finalize"] == [*alone["finalize"], "$idist.finalize()"]
        assert layered["network"]["module"] == alone["network"]
        handlers = alone["train"]["trainer"]["train_handlers"]
        on_this_rank = handlers.replace("@train#handlers", "distributed.handlers_of_this_rank(@train#handlers)")
        assert layered["train"]["trainer"]["train_handlers"] == on_this_rank


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(monkeypatch):
    monkeypatch.setattr(distributed.idist, "get_world_size", lambda: 3)
    assert distributed.per_process_batch_size(96) == 32
    with pytest.raises(ValueError, match="batch_size 32 does not split evenly over 3 processes"):
        distributed.per_process_batch_size(32)


def test_ranks_above_zero_attach_no_writer_and_no_progress_bar(monkeypatch, tmp_path):
    schedule, bar, writer = object(), ProgressBar(), ModelWriter(tmp_path / "model.pt", {})
    assert distributed.handlers_of_this_rank([schedule, bar, writer]) == [schedule, bar, writer]
    monkeypatch.setattr(distributed.idist, "get_rank", lambda: 1)
    assert distributed.handlers_of_this_rank([schedule, bar, writer]) == [schedule]
