"""Crash safety end to end on tiny TissueMNIST (and MRBrainS18 for a segmentation strategy with a donor pass): a
train or unlearn run killed with SIGKILL mid-epoch resumes with ``--resume true`` to the very same model, reports
the seconds of the whole run and ends the killed MLflow run ``KILLED``; no workflow ever writes to the original model
file."""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
import torch
from PIL import Image

from medunlearn_monai.checkpoints import checkpoint_dir, latest_checkpoint
from medunlearn_monai.data.medmnist import load_medmnist_items
from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18, write_synthetic_tissuemnist
from medunlearn_monai.forget import ForgetRequest
from medunlearn_monai.records import file_sha256, read_json, record_path
from medunlearn_monai.safe_loading import load_weights
from medunlearn_monai.tracking import RESUMED_FROM_TAG
from medunlearn_monai.workflows import bundle_dir, config_files, run_workflow

BUNDLE = "tissuemnist_resnet_classification"
EPOCHS = 3
STALL_AT = 8  # the second iteration of epoch 2: 48 training images in batches of 8 make 6 iterations an epoch
WAIT_SECONDS = 300
SEGMENTATION_BUNDLE = "mrbrains18_med3d_segmentation"
SEGMENTATION = {"depth": 10, "pixdim": [4.0, 4.0, 6.0], "roi_size": [32, 32, 16], "test_subjects": ["mrb-subject-g"]}
# 5 retain subjects and the forgotten one 3 times, in batches of 2 subjects: 4 iterations an epoch. The donor pass
# (5 retain subjects, 2 crops each) outlasts an epoch's 6 forget crops, so the kill lands mid-pass.
SEGMENTATION_STALL_AT = 6


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Tiny data, a forget request, an MLflow store and the original model of an uninterrupted 3-epoch run."""
    work = tmp_path_factory.mktemp("crash")
    data = write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=48, n_val=16, n_test=16)
    forgotten = ForgetRequest.generate(load_medmnist_items(data, "train"), 0.1, seed=0).subject_ids
    (work / "request.txt").write_text("\n".join(forgotten) + "\n")
    environment = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MEDUNLEARN_SALT": "crash-salt"}
    with _inside(work, environment):
        run_workflow(BUNDLE, "train", **_settings(work, "reference"))
    return work, environment


@contextmanager
def _inside(work: Path, environment: dict) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for key, value in environment.items():
            patch.setenv(key, value)
        yield


def _settings(work: Path, experiment: str, **overrides) -> dict:
    return {
        "dataset_dir": str(work / "data"),
        "model_dir": str(work / "models"),
        "batch_size": 8,
        "max_epochs": EPOCHS,
        "unlearn_epochs": EPOCHS,
        "experiment_name": experiment,
        "checkpoint_min_seconds": 0,  # these runs take seconds: checkpoint every epoch, not 120 s apart
        **overrides,
    }


def _options(settings: dict) -> list[str]:
    return [part for key, value in settings.items() for part in (f"--{key}", str(value))]


def _kill_mid_epoch_2(
    work: Path,
    environment: dict,
    workflow: str,
    strategy: str | None,
    settings: dict,
    bundle: str = BUNDLE,
    stall_at: int = STALL_AT,
) -> Path:
    """Run the workflow in a subprocess (``python -m monai.bundle run``) and SIGKILL it in epoch 2; returns its output.

    An extra config file stalls the run at iteration ``STALL_AT`` (it writes a marker, then blocks reading a pipe
    nobody writes to), so the kill lands mid-epoch however fast the machine is; the stall changes no computation.
    """
    output = Path(settings["output_model"]) if "output_model" in settings else Path(settings["model_dir"]) / "model.pt"
    marker = work / f"{output.stem}.stalled"
    stall = work / f"{output.stem}.stall.json"
    stall.write_text(
        json.dumps(
            {
                "stall_marker": str(marker),
                "run": [
                    f"$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED(once={stall_at}), "
                    "lambda engine: (os.close(os.open(@stall_marker, os.O_CREAT | os.O_WRONLY)), "
                    "os.read(os.pipe()[0], 1)))",
                    "$@train#trainer.run()",
                ],
            }
        )
    )
    root = bundle_dir(bundle)
    command = [
        *(sys.executable, "-m", "monai.bundle", "run"),
        *("--config_file", str([*config_files(root, workflow, strategy), str(stall)])),
        *("--meta_file", str(root / "configs" / "metadata.json")),
        *("--logging_file", str(root / "configs" / "logging.conf")),
        *("--bundle_root", str(root), *_options(settings)),
    ]
    log = work / f"{output.stem}.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(command, cwd=work, env={**os.environ, **environment}, stdout=stream, stderr=stream)
        deadline = time.monotonic() + WAIT_SECONDS
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert marker.exists()
    assert latest_checkpoint(checkpoint_dir(output)) == checkpoint_dir(output) / "checkpoint_1.pt"
    assert not output.exists() and not record_path(output).exists()
    return output


def _assert_same_weights(path: Path, reference: Path) -> None:
    state, expected = torch.load(path, weights_only=True), torch.load(reference, weights_only=True)
    assert state.keys() == expected.keys()
    different = [name for name in state if not torch.equal(state[name], expected[name])]
    assert not different, f"{len(different)} of {len(state)} tensors differ, e.g. {different[:3]}"


def _progress_before_the_kill(output: Path) -> dict:
    """What the killed run's checkpoint holds about it: its seconds up to the save and its MLflow run id."""
    return load_weights(checkpoint_dir(output) / "checkpoint_1.pt")["run_progress"]


def _resumed_run_matches(
    environment: dict,
    experiment: str,
    reference_experiment: str,
    before_kill: dict,
    output: Path,
    val_metric: str = "val_acc",
) -> None:
    """The finished run of ``experiment`` resumed after epoch 1, trained epochs 2 and 3 only, and ended with the
    reference run's final ``val_metric``; it names the killed run, which is ended ``KILLED``, and its seconds (in its
    record and in MLflow) add those the killed run had spent up to its checkpoint."""
    client = mlflow.MlflowClient(environment["MLFLOW_TRACKING_URI"])

    def finished_run(name: str):
        experiment_id = client.get_experiment_by_name(name).experiment_id
        (run,) = client.search_runs([experiment_id], "attributes.status = 'FINISHED'")
        return run, {metric.step: metric.value for metric in client.get_metric_history(run.info.run_id, val_metric)}

    (resumed, history), (_, reference) = finished_run(experiment), finished_run(reference_experiment)
    assert resumed.data.params["resumed_from_epoch"] == "1"
    assert sorted(history) == [2, 3] and sorted(reference) == [1, 2, 3]
    assert history[EPOCHS] == reference[EPOCHS]
    killed = client.get_run(before_kill["mlflow_run_id"])
    assert killed.info.experiment_id == resumed.info.experiment_id and killed.info.status == "KILLED"
    assert resumed.data.tags[RESUMED_FROM_TAG] == killed.info.run_id
    seconds = read_json(record_path(output))["seconds"]
    assert seconds > before_kill["seconds"] > 0
    seconds_metric = "unlearn_seconds" if "unlearn_seconds" in resumed.data.metrics else "train_seconds"
    assert resumed.data.metrics[seconds_metric] == pytest.approx(seconds)


def test_killed_training_resumes_with_the_cli_to_the_same_model_and_metrics(work):
    work, environment = work
    original = work / "models" / "model.pt"
    original_hash = file_sha256(original)
    settings = _settings(work, "killed-train", model_dir=str(work / "killed"))
    output = _kill_mid_epoch_2(work, environment, "train", None, settings)
    before_kill = _progress_before_the_kill(output)
    resumed = subprocess.run(
        [sys.executable, "-m", "medunlearn_monai.cli", "run", BUNDLE, "train", *_options(settings), "--resume", "true"],
        cwd=work,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed at epoch 1 of 3" in resumed.stdout + resumed.stderr
    _assert_same_weights(output, original)
    _resumed_run_matches(environment, "killed-train", "reference", before_kill, output)
    assert not checkpoint_dir(output).exists()
    assert file_sha256(original) == original_hash


def test_killed_unlearning_resumes_to_the_same_model(work):
    work, environment = work
    original = work / "models" / "model.pt"
    original_hash = file_sha256(original)
    request = {"forget_request_file": str(work / "request.txt")}
    reference = work / "models" / "unlearned_reference.pt"
    killed = work / "models" / "unlearned_killed.pt"
    settings = _settings(work, "killed-unlearn", **request, output_model=str(killed))
    _kill_mid_epoch_2(work, environment, "unlearn", "salun", settings)
    before_kill = _progress_before_the_kill(killed)
    with _inside(work, environment):
        run_workflow(
            BUNDLE, "unlearn", "salun", **_settings(work, "unlearn-reference", **request, output_model=str(reference))
        )
        run_workflow(BUNDLE, "unlearn", "salun", **settings, resume=True)
    _assert_same_weights(killed, reference)
    _resumed_run_matches(environment, "killed-unlearn", "unlearn-reference", before_kill, killed)
    assert not checkpoint_dir(killed).exists()
    assert file_sha256(original) == original_hash


def test_killed_segmentation_unlearning_with_a_donor_pass_resumes_to_the_same_model(tmp_path):
    # Learn Others takes donor maps from a shuffled pass over the retain subjects, in random crops; the pass goes on
    # across epochs, so the checkpoint must hold where it stood for the resumed run to take the same donors.
    work = tmp_path
    subjects = [f"mrb-subject-{letter}" for letter in "abcdefg"]
    write_synthetic_mrbrains18(work / "data", n_subjects=len(subjects), spacing=[4.0, 4.0, 6.0], subject_ids=subjects)
    (work / "request.txt").write_text("mrb-subject-c\n")
    environment = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MEDUNLEARN_SALT": "crash-salt"}
    common = {**_settings(work, "seg-source", max_epochs=1), **SEGMENTATION, "batch_size": 2, "val_interval": 1}
    with _inside(work, environment):
        run_workflow(SEGMENTATION_BUNDLE, "train", **common)  # any source model will do
    request = {"forget_request_file": str(work / "request.txt")}
    unlearning = {**common, "unlearn_epochs": EPOCHS, **request, "forget_repeats": 3}
    reference = work / "models" / "unlearned_reference.pt"
    killed = work / "models" / "unlearned_killed.pt"
    settings = {**unlearning, "experiment_name": "seg-killed", "output_model": str(killed)}
    _kill_mid_epoch_2(
        work, environment, "unlearn", "learn_others", settings, SEGMENTATION_BUNDLE, SEGMENTATION_STALL_AT
    )
    before_kill = _progress_before_the_kill(killed)
    with _inside(work, environment):
        run_workflow(
            SEGMENTATION_BUNDLE,
            "unlearn",
            "learn_others",
            **{**unlearning, "experiment_name": "seg-reference", "output_model": str(reference)},
        )
        run_workflow(SEGMENTATION_BUNDLE, "unlearn", "learn_others", **settings, resume=True)
    _assert_same_weights(killed, reference)
    _resumed_run_matches(environment, "seg-killed", "seg-reference", before_kill, killed, val_metric="val_dice")
    assert not checkpoint_dir(killed).exists()


class _WriteGuard:
    """Fail any attempt to open for writing, replace, rename onto, truncate or delete the protected files; count
    their reads, so a test can tell that a workflow did use them."""

    def __init__(self, protected: Iterable[Path], monkeypatch: pytest.MonkeyPatch):
        self.protected = {path.resolve() for path in protected}
        self.reads = 0
        real_open, real_os_open = builtins.open, os.open

        def guarded_open(file, mode="r", *args, **kwargs):
            if self._is_protected(file):
                if set(mode) & set("wax+"):
                    raise AssertionError(f"open({file!r}, {mode!r}) on a protected file")
                self.reads += 1
            return real_open(file, mode, *args, **kwargs)

        def guarded_os_open(path, flags, *args, **kwargs):
            writing = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
            if self._is_protected(path) and flags & writing:
                raise AssertionError(f"os.open({path!r}) for writing on a protected file")
            return real_os_open(path, flags, *args, **kwargs)

        def guarded_save(obj, f, *args, **kwargs):  # torch writes a path from C++, past Python's open
            if self._is_protected(f):
                raise AssertionError(f"torch.save to {f!r}, a protected file")
            return real_save(obj, f, *args, **kwargs)

        real_save = torch.save
        monkeypatch.setattr(torch, "save", guarded_save)
        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(io, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)
        targets = {"replace": "dst", "rename": "dst", "remove": "path", "unlink": "path", "truncate": "path"}
        for name, target in targets.items():
            monkeypatch.setattr(os, name, self._refusing(getattr(os, name), name, target))

    def _is_protected(self, path) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and Path(os.fsdecode(path)).resolve() in self.protected

    def _refusing(self, function, name: str, target: str):
        def guarded(*args, **kwargs):
            position = 1 if target == "dst" else 0
            if self._is_protected(args[position] if len(args) > position else kwargs.get(target)):
                raise AssertionError(f"os.{name}{args!r} on a protected file")
            return function(*args, **kwargs)

        return guarded


def test_no_workflow_writes_to_the_original_model(work, tmp_path, monkeypatch):
    work, environment = work
    models = work / "models"
    original = models / "model.pt"
    protected = [original, record_path(original)]
    images = tmp_path / "images"
    images.mkdir()
    for index, item in enumerate(load_medmnist_items(work / "data" / "tissuemnist.npz", "test")[:4]):
        Image.fromarray(item["image"][0]).save(images / f"case_{index}.png")
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    request = {"forget_request_file": str(work / "request.txt")}
    quick = _settings(work, "guarded", max_epochs=1)
    workflows = {
        "train": lambda: run_workflow(BUNDLE, "train", **quick, output_model=str(tmp_path / "other.pt")),
        "retrain": lambda: run_workflow(BUNDLE, "train", **quick, **request, output_model=str(tmp_path / "re.pt")),
        "unlearn": lambda: run_workflow(BUNDLE, "unlearn", "rl", **quick, **request),
        "evaluate": lambda: run_workflow(BUNDLE, "evaluate", **quick, model_path=str(original)),
        "inference": lambda: run_workflow(
            BUNDLE, "inference", model_dir=str(models), dataset_dir=str(images), output_dir=str(tmp_path / "out")
        ),
    }
    hashes = {path: file_sha256(path) for path in protected}
    guard = _WriteGuard(protected, monkeypatch)
    with pytest.raises(AssertionError, match="protected"):
        torch.save({}, original)  # the guard does catch a write
    for name, workflow in workflows.items():
        reads = guard.reads
        workflow()
        assert {path: file_sha256(path) for path in protected} == hashes, f"{name} changed the original model"
        if name in ("unlearn", "evaluate", "inference"):
            assert guard.reads > reads, f"{name} never read the original model"
    monkeypatch.undo()
    assert (models / "unlearned_rl.pt").is_file() and (tmp_path / "out" / "predictions.csv").is_file()
