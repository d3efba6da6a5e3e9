"""MLflow model registry: register a model file with its records, so a deployment can pin "the model after request X".

Each registration logs one run holding the model file, its ``<model>.json`` record, its ``<model>.eval.json``
evaluation and its ``<model>.certificate.json`` erasure certificate (the last two when they exist) under ``model/``,
and creates the next version of a registered model from it. The version is tagged with the record's salted
forget-request SHA-256 and model hashes (never subject IDs) and, for a model made under a request, aliased
``request-<sha256>``, so ``models:/<name>@request-<sha256>`` names the latest model registered for that request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from medunlearn_monai.records import (
    REQUEST_KEY,
    certificate_path,
    evaluation_path,
    file_sha256,
    read_record,
    record_path,
)
from medunlearn_monai.tracking import tracking_uri

ARTIFACT_DIR = "model"
REQUEST_ALIAS_PREFIX = "request-"
NO_REQUEST = "none"
_RECORD_TAGS = ("bundle", "workflow", "strategy", REQUEST_KEY, "source_model_sha256")


@dataclass(frozen=True)
class Registration:
    """A registered model version: its name, number, alias (``None`` without a request) and the run holding it."""

    name: str
    version: int
    alias: str | None
    run_id: str
    artifacts: tuple[str, ...]

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``, the pinned reference a deployment loads."""
        return f"models:/{self.name}/{self.version}"

    @property
    def alias_uri(self) -> str | None:
        """``models:/<name>@request-<sha256>``, which follows the latest model registered for the request."""
        return f"models:/{self.name}@{self.alias}" if self.alias else None


def register_model(model_path: str | os.PathLike, name: str, experiment_name: str = "model-registry") -> Registration:
    """Register ``model_path`` and the records beside it as the next version of the registered model ``name``.

    Args:
        model_path: a model file written by a workflow (``ModelWriter``), e.g. ``models/unlearned_salun.pt``.
        name: the registered model's name; created if missing.
        experiment_name: the MLflow experiment of the run that holds the artifacts.

    Raises:
        FileNotFoundError: when the model file does not exist.
        ValueError: when ``name`` is blank, or the file's SHA-256 differs from the one its record states (the
            file changed after it was written).
    """
    if not name or not name.strip():
        raise ValueError("a registered model needs a name: pass --name.")
    model = Path(model_path)
    record = read_record(model)
    model_sha256 = file_sha256(model)
    if record.get("model_sha256", model_sha256) != model_sha256:
        raise ValueError(
            f"{model} does not match its record {record_path(model)} (SHA-256 {model_sha256[:12]}... versus "
            f"{record['model_sha256'][:12]}...): the model file changed after it was written."
        )
    files = [
        path for path in (model, record_path(model), evaluation_path(model), certificate_path(model)) if path.is_file()
    ]
    tags = {key: str(record[key]) for key in _RECORD_TAGS if record.get(key) is not None}
    tags["model_sha256"] = model_sha256
    tags["model_file"] = model.name
    if certificate_path(model).is_file():
        tags["certificate_sha256"] = file_sha256(certificate_path(model))

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    run = client.create_run(experiment_id, run_name=f"register-{name}", tags=tags)
    try:
        for path in files:
            client.log_artifact(run.info.run_id, str(path), ARTIFACT_DIR)
    except BaseException:
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, source=f"runs:/{run.info.run_id}/{ARTIFACT_DIR}", run_id=run.info.run_id, tags=tags
    )
    request = tags.get(REQUEST_KEY, NO_REQUEST)
    alias = None if request == NO_REQUEST else f"{REQUEST_ALIAS_PREFIX}{request}"
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return Registration(name, int(version.version), alias, run.info.run_id, tuple(path.name for path in files))
