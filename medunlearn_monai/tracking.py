"""MLflow tracking: one run per workflow, params and metrics under the project's names, runs that always end.

MONAI's ``MLFlowHandler`` logs every iteration and the dataset's contents and leaves evaluation-only
runs open; a deletion workflow must log neither identifiers nor half-finished runs, so runs are
managed here with MLflow's client and engines report through :class:`EngineMetricsLogger`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import ignite.distributed as idist
import mlflow
from ignite.engine import Engine, Events
from matplotlib.figure import Figure
from mlflow.entities import DatasetInput, Metric, Param, Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

DEFAULT_STORE = "mlflow.db"
# One try, answered within this many seconds, decides whether a tracking server is up (see check_server).
SERVER_CHECK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# Tag of a run that resumed an interrupted run from its checkpoint: the interrupted run's id.
RESUMED_FROM_TAG = "resumed_from_run_id"
# Attribute of a resumed trainer's state: the seconds its interrupted run(s) had spent up to the checkpoint.
SECONDS_BEFORE_RESUME = "seconds_before_resume"
logger = logging.getLogger(__name__)
_open_trackers: set[MLflowTracker] = set()


class DatasetSource(Protocol):
    """What a tracker logs as the run's MLflow datasets (see :mod:`medunlearn_monai.lineage`)."""

    def dataset_inputs(self) -> list[DatasetInput]: ...


class TrackingServerUnreachable(ConnectionError):
    """The MLflow tracking server named by ``MLFLOW_TRACKING_URI`` does not answer."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else MLflow's local sqlite store ``mlflow.db`` in the working directory.

    The path is made absolute because MLflow caches stores by URI: a relative one would keep
    pointing at the first working directory.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_STORE}"


class MLflowTracker:
    """One MLflow run: start it, log params, metrics and artifacts, end it FINISHED or FAILED.

    A run still open when the interpreter exits (the workflow raised) is marked FAILED. A run that
    finishes gets a plot of every metric logged at more than one step (``plots/metrics_by_epoch.png``).

    Args:
        experiment_name: MLflow experiment, created if missing.
        run_name: display name of the run.
        params: parameters logged at start (values are stringified; None values are dropped).
        tags: extra tags.
        config_dir: a bundle's ``configs`` folder, stored with the run as the ``config`` artifact.
        enabled: when False nothing is started or logged and no store is opened (the ranks > 0 of a multi-process
            run, whose rank 0 holds the run).
        datasets: the run's data lineage (:class:`medunlearn_monai.lineage.DataLineage`), logged as MLflow datasets
            when the run starts.
    """

    def __init__(
        self,
        experiment_name: str,
        run_name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        config_dir: str | os.PathLike | None = None,
        enabled: bool = True,
        datasets: DatasetSource | None = None,
    ):
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.params = {key: value for key, value in (params or {}).items() if value is not None}
        self.tags = dict(tags or {})
        self.config_dir = config_dir
        self.enabled = enabled
        self.datasets = datasets
        # Opening a sqlite store creates it: several processes doing so at once would race.
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri()) if enabled else None
        self.run_id: str | None = None
        self.history: dict[str, list[tuple[int, float]]] = {}

    def start(self) -> str | None:
        """Create the run and log its params; returns the run id (None when disabled).

        Raises:
            TrackingServerUnreachable: when a tracking server is configured but does not answer.
        """
        if not self.enabled:
            return None
        check_server(self.client)
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment_name)
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        _open_trackers.add(self)
        params = [Param(key, _param_text(value)) for key, value in self.params.items()]
        self.client.log_batch(self.run_id, params=params)
        if self.config_dir:
            self.client.log_artifacts(self.run_id, str(self.config_dir), "config")
        if self.datasets is not None:
            self.client.log_inputs(self.run_id, datasets=self.datasets.dataset_inputs())
        return self.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log numeric metrics at ``step`` (non-finite and non-numeric values are skipped)."""
        if not self.enabled:
            return
        timestamp = _now_ms()
        entries = [
            Metric(key, float(value), timestamp, step)
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and value == value and abs(value) != float("inf")
        ]
        if entries:
            self.client.log_batch(self._active_run(), metrics=entries)
        for entry in entries:
            self.history.setdefault(entry.key, []).append((step, entry.value))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params known only after start, e.g. a search's best values (stringified; None values are dropped)."""
        if not self.enabled:
            return
        entries = [Param(key, _param_text(value)) for key, value in params.items() if value is not None]
        self.client.log_batch(self._active_run(), params=entries)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload one file to the run's artifacts."""
        if not self.enabled:
            return
        self.client.log_artifact(self._active_run(), str(path), artifact_path)

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        """Store a matplotlib figure as an image artifact, e.g. ``plots/curves.png``."""
        if not self.enabled:
            return
        self.client.log_figure(self._active_run(), figure, artifact_file, save_kwargs={"bbox_inches": "tight"})

    def mark_resumed_from(self, interrupted_run_id: str) -> None:
        """Record that this run continues ``interrupted_run_id`` from its checkpoint.

        This run gets the tag ``resumed_from_run_id``; the interrupted run, left ``RUNNING`` by a killed process,
        is ended ``KILLED`` (a run already ended keeps its status; one not in this store is only named in the tag).
        """
        if not self.enabled or not interrupted_run_id or interrupted_run_id == self.run_id:
            return
        self.client.set_tag(self._active_run(), RESUMED_FROM_TAG, interrupted_run_id)
        try:
            status = self.client.get_run(interrupted_run_id).info.status
        except MlflowException:
            logger.warning("The interrupted run %s is not in %s; it is only named.", interrupted_run_id, tracking_uri())
            return
        if status == RunStatus.to_string(RunStatus.RUNNING):
            self.client.set_terminated(interrupted_run_id, RunStatus.to_string(RunStatus.KILLED))

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the run with ``status`` (``FINISHED`` or ``FAILED``); a second call does nothing."""
        if self.run_id is None or self not in _open_trackers:
            return
        if status == "FINISHED":
            self._log_curves()
        self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.from_string(status)))
        _open_trackers.discard(self)

    def _log_curves(self) -> None:
        curves = {name: sorted(points) for name, points in self.history.items() if len(points) > 1}
        if not curves:
            return
        figure = Figure(figsize=(4 * len(curves), 3))
        axes = figure.subplots(1, len(curves), squeeze=False)
        for axis, (name, points) in zip(axes[0], curves.items(), strict=True):
            axis.plot([step for step, _ in points], [value for _, value in points], marker="o")
            axis.set(title=name, xlabel="epoch")
        figure.suptitle(self.run_name)
        self.log_figure(figure, "plots/metrics_by_epoch.png")

    def _active_run(self) -> str:
        if self.run_id is None:
            raise RuntimeError(f"MLflow run '{self.run_name}' was not started: call start() first.")
        return self.run_id


def check_server(client: mlflow.MlflowClient) -> None:
    """Fail at once when the client's tracking server (``http(s)://``) does not answer; local stores pass.

    MLflow retries a refused connection for minutes with back-off and would then lose the run's record
    mid-training; one quick request without retries decides before anything runs.

    Raises:
        TrackingServerUnreachable: naming the server and the reason.
    """
    uri = client.tracking_uri
    if urlparse(uri).scheme not in ("http", "https"):
        return
    saved = {key: os.environ.get(key) for key in SERVER_CHECK}
    os.environ.update(SERVER_CHECK)
    try:
        client.search_experiments(max_results=1)
    except MlflowException as error:
        reason = re.search(r"\[Errno -?\d+\][^'\")]*", str(error))
        raise TrackingServerUnreachable(
            f"MLflow tracking server {uri} does not answer ({reason.group(0) if reason else str(error)[:300]}); "
            "nothing was run. Start the server, or unset MLFLOW_TRACKING_URI to record runs in the local store."
        ) from error
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fail_open_runs() -> None:
    """Mark every run that was started but not ended as FAILED (a workflow raised)."""
    for tracker in list(_open_trackers):
        tracker.end("FAILED")


atexit.register(fail_open_runs)


class EngineMetricsLogger:
    """Log an engine's ``state.metrics`` to MLflow each epoch as ``<prefix><name>``, and its timing at the end.

    Args:
        tracker: the run to log to.
        prefix: prepended to metric names, e.g. ``val_``.
        seconds_metric: if set, the engine's wall time is logged under this name at completion together
            with ``samples_per_second`` (for trainers).
    """

    def __init__(self, tracker: MLflowTracker, prefix: str = "", seconds_metric: str | None = None):
        self.tracker = tracker
        self.prefix = prefix
        self.seconds_metric = seconds_metric

    def attach(self, engine: Engine) -> None:
        """Log at every epoch end, and timing at completion."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        if self.seconds_metric:
            engine.add_event_handler(Events.COMPLETED, self.log_timing)

    def __call__(self, engine: Engine) -> None:
        metrics = {f"{self.prefix}{name}": _scalar(value) for name, value in engine.state.metrics.items()}
        self.tracker.log_metrics(metrics, step=engine.state.epoch)

    def log_timing(self, engine: Engine) -> None:
        """Log total seconds and throughput of the finished run."""
        seconds = engine_seconds(engine)
        samples = samples_seen(engine)
        self.tracker.log_metrics({self.seconds_metric: seconds, "samples_per_second": samples / max(seconds, 1e-9)})


def engine_seconds(engine: Engine) -> float:
    """Wall seconds of the engine's finished run as ignite measured it (STARTED handlers included).

    A run resumed from a checkpoint adds the seconds its interrupted run(s) had spent up to that checkpoint
    (``state.seconds_before_resume``, set by :class:`medunlearn_monai.checkpoints.RunCheckpointer`).
    """
    seconds_before = float(getattr(engine.state, SECONDS_BEFORE_RESUME, 0.0) or 0.0)
    return float(engine.state.times.get(Events.COMPLETED.name) or 0.0) + seconds_before


def samples_seen(engine: Engine) -> int:
    """Number of items the engine processed: epochs times the items its data loader yields per epoch, times the
    number of processes of a distributed run (their ``DistributedSampler`` gives each as many items)."""
    loader = getattr(engine, "data_loader", None)
    if loader is None or getattr(loader, "dataset", None) is None:
        return 0
    per_epoch = len(loader) * loader.batch_size if getattr(loader, "drop_last", False) else len(loader.sampler)
    return int(engine.state.epoch * per_epoch * idist.get_world_size())


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1 else value


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def _now_ms() -> int:
    return int(time.time() * 1000)


PARENT_RUN_TAG = "mlflow.parentRunId"  # tag of a child run (a tuning trial, a study's shadow model): its parent


def run_datasets(run: Run) -> dict[str, str]:
    """Context -> digest of the MLflow datasets a run logged (empty for a run without datasets)."""
    digests = {}
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        contexts = [tag.value for tag in dataset_input.tags if tag.key == MLFLOW_DATASET_CONTEXT]
        if contexts:
            digests[contexts[0]] = dataset_input.dataset.digest
    return digests
