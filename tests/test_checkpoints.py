"""Run checkpoints: settings are checked, and a crashed toy run resumes to bit-identical weights."""

from __future__ import annotations

import os
import random
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from torch.utils.data import DataLoader, TensorDataset

from medunlearn_monai.checkpoints import (
    CheckpointSettingsError,
    RunCheckpointer,
    RunSettings,
    checkpoint_dir,
    latest_checkpoint,
)
from medunlearn_monai.flags import as_flag
from medunlearn_monai.random_states import RandomStates
from medunlearn_monai.safe_loading import UntrustedCheckpointError, load_weights
from medunlearn_monai.strategies import RandomRelabel
from medunlearn_monai.tracking import RESUMED_FROM_TAG, MLflowTracker, engine_seconds, tracking_uri

SETTINGS = {"seed": 0, "learning_rate": 0.1, "forget_request_sha256": "none"}


def test_run_settings_name_what_changed():
    settings = RunSettings(SETTINGS)
    settings.load_state_dict(dict(SETTINGS))
    with pytest.raises(CheckpointSettingsError, match=r"learning_rate: 0.1 then, 0.2 now"):
        RunSettings({**SETTINGS, "learning_rate": 0.2}).load_state_dict(settings.state_dict())


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("true", True), ("False", False), (None, False)])
def test_resume_flag_accepts_json_and_command_line_values(value, expected):
    assert as_flag(value, "resume") is expected


def test_resume_flag_rejects_other_text():
    with pytest.raises(ValueError, match="resume must be true or false, got 'maybe'"):
        as_flag("maybe", "resume")


def test_checkpoint_interval_must_be_a_positive_number_of_epochs(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_interval must be a positive number of epochs, got 0"):
        RunCheckpointer(tmp_path / "model.pt", {}, interval=0)


@pytest.mark.parametrize("value", [-1, "60", True])
def test_checkpoint_min_seconds_must_be_a_number_of_seconds(tmp_path, value):
    with pytest.raises(ValueError, match=f"checkpoint_min_seconds must be a number of seconds >= 0, got {value!r}"):
        RunCheckpointer(tmp_path / "model.pt", {}, min_seconds=value)


def test_min_seconds_skips_epoch_ends_that_come_too_soon_after_the_last_checkpoint(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr("medunlearn_monai.checkpoints.time.monotonic", lambda: now[0])
    network = torch.nn.Linear(2, 2)

    def step(engine, batch):
        now[0] += 3  # every epoch (one iteration) takes 3 seconds

    engine = Engine(step)
    checkpointer = RunCheckpointer(tmp_path / "model.pt", {"network": network}, min_seconds=5)
    checkpointer.attach(engine)
    saved = []
    engine.add_event_handler(
        Events.EPOCH_COMPLETED, lambda _: saved.append(latest_checkpoint(checkpoint_dir(tmp_path / "model.pt")))
    )
    engine.run([0], max_epochs=6)
    # The run starts at 0 s and epochs end at 3, 6, 9, 12, 15 s...: a checkpoint is due 5 s after the last one.
    assert [path.name if path else None for path in saved] == [
        None, "checkpoint_2.pt", "checkpoint_2.pt", "checkpoint_4.pt", "checkpoint_4.pt", "checkpoint_6.pt"
    ]  # fmt: skip


class _CrashAt(Exception):
    """Stands in for a killed process."""


def _toy_run(tmp_path, resume: bool = False, crash_at_iteration: int | None = None, **settings) -> dict:
    """Three epochs of a small shuffled, dropout, relabeling training run checkpointed by RunCheckpointer.

    Each run starts from the same seeds, as a fresh process running the same config would.
    """
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)))
    relabel = RandomRelabel(num_classes=3, seed=0)

    def step(engine, batch):
        images, labels = batch
        labels = (labels + torch.randint(1, 3, labels.shape, generator=relabel.generator)) % 3
        network.train()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(network(images), labels) * (1 + np.random.rand() + random.random())
        loss.backward()
        optimizer.step()

    engine = Engine(step)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: scheduler.step())
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: torch.rand(3))  # validation draws from torch too
    if crash_at_iteration is not None:

        def crash(engine):
            if engine.state.iteration == crash_at_iteration:
                raise _CrashAt()

        engine.add_event_handler(Events.ITERATION_COMPLETED, crash)
    checkpointer = RunCheckpointer(
        tmp_path / "model.pt",
        {"network": network, "optimizer": optimizer, "lr_scheduler": scheduler},
        strategies=[relabel],
        settings={**SETTINGS, **settings},
        resume=resume,
    )
    checkpointer.attach(engine)
    engine.run(DataLoader(data, batch_size=8, shuffle=True), max_epochs=3)
    return {name: value.clone() for name, value in network.state_dict().items()}


def test_a_crashed_run_resumes_to_bit_identical_weights(tmp_path):
    uninterrupted = _toy_run(tmp_path / "reference")
    with pytest.raises(_CrashAt):
        _toy_run(tmp_path, crash_at_iteration=6)  # mid-epoch 2 of 4 iterations each
    assert latest_checkpoint(checkpoint_dir(tmp_path / "model.pt")).name == "checkpoint_1.pt"
    resumed = _toy_run(tmp_path, resume=True)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in resumed)
    assert not checkpoint_dir(tmp_path / "model.pt").exists()  # removed once the run completed


def test_without_the_random_states_a_resumed_run_differs(tmp_path, monkeypatch):
    # The equality above is not automatic: the shuffle order, dropout and relabeling draw from the saved states.
    uninterrupted = _toy_run(tmp_path / "reference")
    with pytest.raises(_CrashAt):
        _toy_run(tmp_path, crash_at_iteration=6)
    monkeypatch.setattr(RandomStates, "load_state_dict", lambda self, state: None)
    resumed = _toy_run(tmp_path, resume=True)
    assert not all(torch.equal(resumed[name], uninterrupted[name]) for name in resumed)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path):
    with pytest.raises(_CrashAt):
        _toy_run(tmp_path, crash_at_iteration=2)
    assert not checkpoint_dir(tmp_path / "model.pt").exists()


def test_checkpoints_of_an_interrupted_run_are_neither_ignored_nor_resumed_under_other_settings(tmp_path):
    with pytest.raises(_CrashAt):
        _toy_run(tmp_path, crash_at_iteration=6)
    with pytest.raises(FileExistsError, match="holds checkpoints of an interrupted run: pass --resume true"):
        _toy_run(tmp_path)
    with pytest.raises(CheckpointSettingsError, match="seed: 0 then, 1 now"):
        _toy_run(tmp_path, resume=True, seed=1)


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="there is no checkpoint in .*model.checkpoints"):
        _toy_run(tmp_path, resume=True)


class _RunsCode:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_run_checkpoint_that_would_run_code_is_refused_on_resume(tmp_path):
    marker = tmp_path / "code_ran"
    folder = checkpoint_dir(tmp_path / "model.pt")
    folder.mkdir()
    torch.save({"trainer": _RunsCode(f"touch {marker}")}, folder / "checkpoint_1.pt")
    with pytest.raises(UntrustedCheckpointError, match=r"checkpoint_1\.pt was refused"):
        _toy_run(tmp_path, resume=True)
    assert not marker.exists()


def test_a_strategy_that_cannot_save_its_state_is_refused_before_the_run(tmp_path):
    class DrawsWithoutSaving:
        def __init__(self):
            self.generator = torch.Generator().manual_seed(0)

        def attach(self, engine):
            engine.add_event_handler(Events.ITERATION_STARTED, lambda _: torch.rand(1, generator=self.generator))

    with pytest.raises(TypeError, match="cannot checkpoint strategy DrawsWithoutSaving: .* random draws afresh"):
        RunCheckpointer(tmp_path / "model.pt", {}, strategies=[RandomRelabel(3), DrawsWithoutSaving()])


def _timed_run(tmp_path, now: list[float], tracker=None, resume: bool = False, crash_at_iteration=None) -> Engine:
    """Three epochs of two iterations, each taking 10 s on the fake clock ``now``, checkpointed every epoch."""
    network = torch.nn.Linear(2, 2)

    def step(engine, batch):
        now[0] += 10
        if engine.state.iteration == crash_at_iteration:
            raise _CrashAt()

    engine = Engine(step)
    RunCheckpointer(tmp_path / "model.pt", {"network": network}, tracker=tracker, resume=resume).attach(engine)
    engine.run([0, 1], max_epochs=3)
    return engine


def test_a_resumed_run_reports_the_seconds_spent_before_the_crash_too(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("medunlearn_monai.checkpoints.time.monotonic", lambda: now[0])
    with pytest.raises(_CrashAt):
        _timed_run(tmp_path, now, crash_at_iteration=3)  # epoch 1 took 20 s and was checkpointed, epoch 2 crashed
    assert load_weights(checkpoint_dir(tmp_path / "model.pt") / "checkpoint_1.pt")["run_progress"]["seconds"] == 20
    engine = _timed_run(tmp_path, now, resume=True)
    # ignite measured the resumed epochs in real seconds; the run's seconds add the 20 s before the crash
    assert engine_seconds(engine) == pytest.approx(20 + engine.state.times["COMPLETED"])
    assert engine_seconds(engine) >= 20


def test_a_resumed_run_ends_the_killed_mlflow_run_and_names_it(tmp_path):
    client = mlflow.MlflowClient(tracking_uri())
    killed_run = client.create_run(client.create_experiment("exp"), run_name="train-original").info.run_id
    with pytest.raises(_CrashAt):  # the killed process held this run and never ended it
        _timed_run(tmp_path, [0.0], tracker=SimpleNamespace(run_id=killed_run), crash_at_iteration=3)
    assert client.get_run(killed_run).info.status == "RUNNING"
    tracker = MLflowTracker("exp", "train-original")
    tracker.start()
    _timed_run(tmp_path, [0.0], tracker=tracker, resume=True)
    tracker.end()
    resumed = client.get_run(tracker.run_id)
    assert client.get_run(killed_run).info.status == "KILLED"
    assert resumed.info.status == "FINISHED" and resumed.data.tags[RESUMED_FROM_TAG] == killed_run
    assert resumed.data.params["resumed_from_epoch"] == "1"
