"""Crash safety: checkpoints of a running train or unlearn workflow, and resuming from the latest one.

A run killed mid-epoch resumes from the end of its last checkpointed epoch and, in deterministic
mode, ends with the same model bit for bit: a checkpoint holds the trainer, network, optimizer and
LR scheduler, the strategies' states (label generators, donor passes) and every random state the next
epoch draws from (torch, NumPy, Python and the training transforms' own generators). It also holds the
seconds the run had spent and its MLflow run, so the resumed run reports the whole run's seconds and
links to the run that was killed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from medunlearn_monai.flags import as_flag
from medunlearn_monai.random_states import RandomStates
from medunlearn_monai.safe_loading import load_weights
from medunlearn_monai.tracking import SECONDS_BEFORE_RESUME, MLflowTracker

logger = logging.getLogger(__name__)
_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)\.pt")
_PROGRESS = "run_progress"


class CheckpointSettingsError(ValueError):
    """A checkpoint was made by a run with other settings (request, seed, hyperparameters) than the one resuming."""


def checkpoint_dir(output_model: str | os.PathLike) -> Path:
    """The checkpoint folder of the run that writes ``output_model``: ``models/x.pt`` -> ``models/x.checkpoints``."""
    return Path(output_model).with_suffix(".checkpoints")


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest epoch in ``directory`` (``checkpoint_<epoch>.pt``), or None."""
    found = [
        (int(match.group(1)), path)
        for path in Path(directory).glob("checkpoint_*.pt")
        if (match := _CHECKPOINT_NAME.fullmatch(path.name))
    ]
    return max(found)[1] if found else None


class RunSettings:
    """The settings of a run (request hash, seed, hyperparameters) stored in its checkpoints and checked on resume.

    Args:
        settings: the run's parameters, as logged to MLflow.
    """

    def __init__(self, settings: Mapping[str, Any]):
        # A JSON round trip keeps plain values only, which weights-only loading accepts.
        self.settings = json.loads(json.dumps(dict(settings), default=str, sort_keys=True))

    def state_dict(self) -> dict[str, Any]:
        """The settings, as plain values."""
        return dict(self.settings)

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        """Accept a checkpoint only if it was made with the same settings.

        Raises:
            CheckpointSettingsError: naming the settings that differ.
        """
        changed = sorted(key for key in {*saved, *self.settings} if saved.get(key) != self.settings.get(key))
        if changed:
            differences = ", ".join(
                f"{key}: {saved.get(key)!r} then, {self.settings.get(key)!r} now" for key in changed
            )
            raise CheckpointSettingsError(
                f"the checkpoint was made with other settings ({differences}): resume with the same settings, "
                "or delete the checkpoint folder to start afresh."
            )


class _RunProgress:
    """What a checkpoint tells about the run that wrote it: its seconds up to the save and its MLflow run id."""

    def __init__(self, tracker: MLflowTracker | None):
        self.tracker = tracker
        self.seconds_before = 0.0  # spent by the interrupted run(s) this one resumed
        self.started = time.monotonic()

    def state_dict(self) -> dict[str, Any]:
        run_id = self.tracker.run_id if self.tracker is not None else None
        return {"seconds": self.seconds_before + time.monotonic() - self.started, "mlflow_run_id": run_id or ""}


class RunCheckpointer:
    """Checkpoint a train or unlearn run every ``interval`` epochs, resume it on request, clean up when it is done.

    Checkpoints go to ``<output_model>.checkpoints/checkpoint_<epoch>.pt`` (ignite's ``Checkpoint`` with
    an atomic ``DiskSaver``; only the latest is kept). With ``resume`` the latest one is loaded when the
    run starts (``Checkpoint.load_objects``); without it, a folder left by an interrupted run is an
    error rather than silently discarded. The folder is removed once the model file is written.

    With ``min_seconds`` an epoch end is skipped when the previous checkpoint (or the run's start) is more
    recent than that: a checkpoint holds the network and the optimizer state (90 MB for ResNet-18, 370 MB for
    the Med3D ResNet-50), and writing one after every epoch of a few seconds costs more than the training it
    protects. A crash then loses at most ``min_seconds`` plus one epoch of training, instead of one epoch; a
    run shorter than ``min_seconds`` writes no checkpoint and restarts from scratch. Resuming stays bit-identical
    whichever epoch the latest checkpoint holds.

    Every strategy handler must have ``state_dict``/``load_state_dict`` (an empty state when it keeps none): one
    without them would be resumed with its random draws started afresh, so it is refused before the run starts.

    A checkpoint also holds the seconds the run had spent when it was saved (counted from this handler's start, so
    the start handlers of a killed run are not counted; the resumed run's are) and the run's MLflow run id. A
    resumed run reports the whole run's seconds (:func:`medunlearn_monai.tracking.engine_seconds`), ends the killed
    run's MLflow run ``KILLED`` and tags its own ``resumed_from_run_id``. Seconds between the last checkpoint and the
    kill are lost with the epoch they were spent on.

    Attach it after every other handler (it is the last of ``train#handlers``): it saves after every
    other end-of-epoch handler (validation draws from the global random state), restores after every
    start handler (a strategy deriving a mask from the source model) and cleans up after ``ModelWriter``.

    In a multi-process run every rank attaches it, so every rank resumes; rank 0 alone writes and removes the files
    (ignite's ``DiskSaver`` saves on rank 0 only), holding the unwrapped network's weights.

    Args:
        output_model: the model file the run writes; its checkpoint folder sits beside it.
        objects: what to save besides the trainer and the random states, by name (network, optimizer, scheduler).
        strategies: the run's strategy handlers, whose states (label generators, ...) are saved too.
        settings: the run's parameters; a checkpoint made with others is not resumed.
        resume: load the latest checkpoint before the first epoch (``true``/``false``, also as text).
        interval: save every this many epochs.
        min_seconds: skip a save due less than this many seconds after the previous one or the run's start
            (0: save every ``interval`` epochs).
        tracker: the MLflow run on which a resume is recorded (param ``resumed_from_epoch``, tag
            ``resumed_from_run_id``), and whose id the checkpoints hold.

    Raises:
        ValueError: when ``interval`` is not a positive integer, ``min_seconds`` is negative or not a number, or
            ``resume`` is not a yes/no value.
        TypeError: when an object in ``objects`` or a strategy handler has no ``state_dict``/``load_state_dict``.
    """

    def __init__(
        self,
        output_model: str | os.PathLike,
        objects: Mapping[str, Any],
        strategies: Sequence[Any] = (),
        settings: Mapping[str, Any] | None = None,
        resume: bool | str = False,
        interval: int = 1,
        min_seconds: float = 0.0,
        tracker: MLflowTracker | None = None,
    ):
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"checkpoint_interval must be a positive number of epochs, got {interval!r}.")
        if isinstance(min_seconds, bool) or not isinstance(min_seconds, (int, float)) or not min_seconds >= 0:
            raise ValueError(f"checkpoint_min_seconds must be a number of seconds >= 0, got {min_seconds!r}.")
        for name, value in objects.items():
            if not (hasattr(value, "state_dict") and hasattr(value, "load_state_dict")):
                raise TypeError(f"cannot checkpoint {name!r}: {type(value).__name__} has no state_dict.")
        for handler in strategies:
            if not (
                callable(getattr(handler, "state_dict", None)) and callable(getattr(handler, "load_state_dict", None))
            ):
                raise TypeError(
                    f"cannot checkpoint strategy {type(handler).__name__}: it has no state_dict/load_state_dict, so a "
                    "resumed run would start its random draws afresh and differ from the uninterrupted run. Give it "
                    "both (an empty state when it draws nothing and keeps nothing across epochs)."
                )
        self.directory = checkpoint_dir(output_model)
        self.objects = dict(objects)
        self.strategies = {
            f"strategy_{index}_{type(handler).__name__}": handler for index, handler in enumerate(strategies)
        }
        self.settings = RunSettings(settings or {})
        self.resume = as_flag(resume, "resume")
        self.interval = interval
        self.min_seconds = float(min_seconds)
        self.tracker = tracker
        self.progress = _RunProgress(tracker)
        self.to_save: dict[str, Any] = {}
        self._checkpoint: Checkpoint | None = None
        self._last_save = time.monotonic()

    def attach(self, engine: Engine) -> None:
        """Resume at the start, save at every ``interval``-th epoch end that is due, remove the folder at completion."""
        transform = getattr(getattr(getattr(engine, "data_loader", None), "dataset", None), "transform", None)
        self.to_save = {
            "trainer": engine,
            **self.objects,
            **self.strategies,
            "random_states": RandomStates(transform),
            "settings": self.settings,
            _PROGRESS: self.progress,
        }
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._due), self)
        engine.add_event_handler(Events.COMPLETED, self.remove)

    def start(self, engine: Engine) -> None:
        """Load the latest checkpoint when resuming; refuse to start afresh over an interrupted run's checkpoints.

        Raises:
            FileNotFoundError: when resuming and there is no checkpoint.
            FileExistsError: when not resuming and checkpoints of an interrupted run exist.
            CheckpointSettingsError: when the checkpoint was made with other settings.
        """
        self._last_save = self.progress.started = time.monotonic()
        self.progress.seconds_before = 0.0
        setattr(engine.state, SECONDS_BEFORE_RESUME, 0.0)
        latest = latest_checkpoint(self.directory)
        if not self.resume:
            if latest is not None:
                raise FileExistsError(
                    f"{self.directory} holds checkpoints of an interrupted run: pass --resume true to continue it, "
                    "or delete the folder to start afresh."
                )
            return
        if latest is None:
            raise FileNotFoundError(f"--resume true, but there is no checkpoint in {self.directory} to resume from.")
        checkpoint = load_weights(latest)
        self.settings.load_state_dict(checkpoint.get("settings", {}))
        Checkpoint.load_objects(to_load=self._objects_to_load(checkpoint), checkpoint=checkpoint)
        progress = checkpoint.get(_PROGRESS)
        if progress is None:
            logger.warning("%s holds no elapsed seconds: the run's seconds will count the resumed epochs only.", latest)
        else:
            self.progress.seconds_before = float(progress["seconds"])
            setattr(engine.state, SECONDS_BEFORE_RESUME, self.progress.seconds_before)
        logger.info(
            "Resumed at epoch %d of %d from %s (%.1f s spent before).",
            engine.state.epoch,
            engine.state.max_epochs,
            latest,
            self.progress.seconds_before,
        )
        if self.tracker is not None:
            self.tracker.log_params({"resumed_from_epoch": engine.state.epoch})
            if progress is not None:
                self.tracker.mark_resumed_from(progress["mlflow_run_id"])

    def _objects_to_load(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """All that is saved, less the progress record (read apart) and a strategy with an empty state that the
        checkpoint lacks (checkpoints made before such strategies were saved)."""
        return {
            name: value
            for name, value in self.to_save.items()
            if name != _PROGRESS and not (name in self.strategies and name not in checkpoint and not value.state_dict())
        }

    def __call__(self, engine: Engine) -> None:
        if self._checkpoint is None:  # made on first use, so a run that fails early leaves no empty folder
            saver = DiskSaver(str(self.directory), atomic=True, create_dir=True, require_empty=False)
            self._checkpoint = Checkpoint(
                self.to_save,
                saver,
                n_saved=1,
                filename_pattern="{name}_{global_step}.{ext}",
                global_step_transform=lambda engine, _: engine.state.epoch,
            )
        self._checkpoint(engine)
        self._last_save = time.monotonic()

    def _due(self, engine: Engine, epoch: int) -> bool:
        return epoch % self.interval == 0 and time.monotonic() - self._last_save >= self.min_seconds

    @idist.one_rank_only()
    def remove(self, engine: Engine) -> None:
        """Delete the checkpoint folder: the run is complete and its model file written."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
