"""Issuing erasure certificates: written by the run that retrains or unlearns, copied with a tuned model, and
completed by the evaluation with its metrics and the evidence behind an approximate guarantee.

What a certificate holds and means: :mod:`medunlearn_monai.certificate`.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ignite
import mlflow
import monai
import torch
from ignite.engine import Engine, Events
from mlflow.exceptions import MlflowException

import medunlearn_monai
from medunlearn_monai.certificate.manifest import (
    CertificateError,
    ConsumedItems,
    batch_identities,
    erasure_proof,
    retain_manifest,
)
from medunlearn_monai.forget import ForgetRequest, ForgetSplit
from medunlearn_monai.records import (
    REFERENCE_KEY,
    REQUEST_KEY,
    certificate_path,
    evaluation_path,
    file_sha256,
    read_json,
    read_record,
    write_json,
)
from medunlearn_monai.tracking import MLflowTracker

logger = logging.getLogger(__name__)
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 lacks guarantee and consumed_items; it is read, and fails their check
ARTIFACT_DIR = "certificate"
EXACT, APPROXIMATE = "exact", "approximate"
EXACT_STRATEGIES = ("retrain", "sisa")
GUARANTEES = {
    EXACT: (
        "The model was trained from scratch without the forgotten subjects' data (retraining, or SISA retraining "
        "every shard that held them), so no weight was ever fitted to it."
    ),
    APPROXIMATE: (
        "The model was edited from weights trained on the forgotten subjects' data, which reduces their influence "
        "but does not provably remove it: only the evaluation evidence listed says how close it comes to exact "
        "retraining."
    ),
}
# Evidence an approximate certificate looks for in the model's evaluation: name -> (what it says, how to get it).
EVIDENCE = {
    "gap_to_retrain": (
        "mean absolute difference from the exact counterpart over quality and attack scores, in points (0 = alike)",
        "evaluate the exactly retrained model for this request, then this model",
    ),
    "mia_loss_auc": (
        "AUC of a loss-threshold attack telling forgotten from test items (0.5 = a coin flip)",
        "evaluate this model with retain, forget and test data",
    ),
    "mia_efficacy": (
        "share of forgotten items a confidence attack judges non-members",
        "evaluate this classifier with retain, forget and test data",
    ),
    "probe_forget_acc": (
        "accuracy of a linear probe on the forgotten items from the model's features (retraining's is the target)",
        "evaluate this classifier with a probe_loader (the classification bundles' evaluate.json has one)",
    ),
}
CLASSIFIER_EVIDENCE = ("mia_efficacy", "probe_forget_acc")  # not measured for segmentation: never "missing" there


def guarantee_of(strategy: str | None) -> str:
    """``exact`` for retraining and SISA (their weights never saw the forgotten data), ``approximate`` otherwise."""
    return EXACT if strategy in EXACT_STRATEGIES else APPROXIMATE


def evaluation_evidence(model_path: str | os.PathLike, model_sha256: str, request_sha256: str) -> dict[str, Any]:
    """The approximate-erasure evidence in the evaluation beside ``model_path`` (:data:`EVIDENCE`), and what is missing.

    Only an evaluation of this very model file (its ``model_sha256``) for this request counts. A segmentation
    evaluation (Dice) misses nothing of :data:`CLASSIFIER_EVIDENCE`, which does not apply to it.
    """
    path = evaluation_path(model_path)
    evaluation = read_json(path) if path.is_file() else {}
    if evaluation.get("model_sha256") != model_sha256 or evaluation.get(REQUEST_KEY) != request_sha256:
        evaluation = {}
    available = {name: float(evaluation[name]) for name in EVIDENCE if isinstance(evaluation.get(name), (int, float))}
    if "gap_to_retrain" in available:
        available["gap_reference"] = evaluation.get(REFERENCE_KEY)
    segmentation = any(name.endswith("_dice") for name in evaluation)
    expected = [name for name in EVIDENCE if not (segmentation and name in CLASSIFIER_EVIDENCE)]
    return {
        "evaluation": path.name if evaluation else None,
        "available": available,
        "missing": {name: EVIDENCE[name][1] for name in expected if name not in available},
    }


def guarantee_section(strategy: str | None, model_path: str | os.PathLike, request_sha256: str) -> dict[str, Any]:
    """``guarantee`` and its meaning, plus the ``evidence`` an approximate one rests on (see :data:`GUARANTEES`)."""
    kind = guarantee_of(strategy)
    section: dict[str, Any] = {"guarantee": kind, "guarantee_meaning": GUARANTEES[kind]}
    if kind == APPROXIMATE:
        section["evidence"] = evaluation_evidence(model_path, file_sha256(model_path), request_sha256)
    return section


def package_versions() -> dict[str, str]:
    """Versions of the interpreter and of the packages that made the model."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "ignite": ignite.__version__,
        "mlflow": mlflow.__version__,
        "medunlearn_monai": medunlearn_monai.__version__,
    }


def read_certificate(path: str | os.PathLike) -> dict[str, Any]:
    """A certificate written by :class:`CertificateWriter`.

    Raises:
        FileNotFoundError: when there is no file at ``path``.
        CertificateError: when it is not a certificate of a known schema version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no erasure certificate at {path}.")
    try:
        certificate = read_json(path)
    except ValueError as error:
        raise CertificateError(f"{path} is not a valid JSON certificate: {error}") from error
    if not isinstance(certificate, dict) or certificate.get("schema_version") not in READABLE_VERSIONS:
        version = certificate.get("schema_version") if isinstance(certificate, dict) else None
        raise CertificateError(
            f"{path} has schema version {version!r}; this version reads {', '.join(map(str, READABLE_VERSIONS))}."
        )
    return certificate


def _optional_sha256(path: str | os.PathLike | None) -> str | None:
    return file_sha256(path) if path and Path(path).is_file() else None


class CertificateWriter:
    """Certify a retraining or unlearning run: check the erasure before training and on every batch, write the
    certificate after it.

    At ``STARTED`` the retain manifest is built and checked (:func:`erasure_proof`), so a run that would break the
    request fails before training. At every ``ITERATION_STARTED`` the batch's item identities are recorded
    (:class:`ConsumedItems`) and the run stops, before the step, when an item without the forget flag is not in
    the manifest: whatever config put it there. At ``COMPLETED`` ``<model>.certificate.json`` is written atomically
    with the models' SHA-256, the record's strategy, timings and seed, the hyperparameters, the consumed items, the
    guarantee and package versions, and logged to the tracker's run under ``certificate/``. Attach it after
    :class:`medunlearn_monai.model_io.ModelWriter`, whose record it reads. A run without a forget request (the
    original model) has nothing to certify: the handler then does nothing.

    Args:
        model_path: the new model file (the ``ModelWriter`` path).
        forget_request: the request the run carries out, or None.
        forget_split: the training items divided by the request.
        trained_items: the items the trainer runs on (forget items flagged for unlearning).
        salt: the deployment's salt for subject hashes.
        dataset_dir: root of relative item keys (see :func:`medunlearn_monai.identities.item_identity`).
        hyperparameters: the run's hyperparameters.
        model_before: the model the new one replaces (the source of unlearning, the original for retraining).
        tracker: the run's MLflow run, or None.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        forget_request: ForgetRequest | None,
        forget_split: ForgetSplit,
        trained_items: Sequence[Mapping[str, Any]],
        salt: bytes,
        dataset_dir: str | os.PathLike,
        hyperparameters: Mapping[str, Any] | None = None,
        model_before: str | os.PathLike | None = None,
        tracker: MLflowTracker | None = None,
    ):
        self.model_path = Path(model_path)
        self.forget_request = forget_request
        self.forget_split = forget_split
        self.trained_items = trained_items
        self.salt = salt
        self.dataset_dir = dataset_dir
        self.hyperparameters = dict(hyperparameters or {})
        self.model_before = model_before
        self.tracker = tracker
        self.proof: dict[str, Any] = {}
        self.consumed: ConsumedItems | None = None
        # Sections a workflow adds about how it erased, e.g. ``sisa`` with the retrained shards.
        self.extra: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        """Check at start, record every batch, certify at completion."""
        engine.add_event_handler(Events.STARTED, self.check)
        self.watch(engine)
        engine.add_event_handler(Events.COMPLETED, self)

    def watch(self, engine: Engine) -> None:
        """Record the items of every batch ``engine`` trains on (also a trainer this handler is not attached to)."""
        engine.add_event_handler(Events.ITERATION_STARTED, self.consume)

    def check(self, engine: Engine | None = None) -> None:
        """Build and check the erasure proof and hash the model before the run (no-op without a request)."""
        if self.forget_request is not None:
            manifest = retain_manifest(self.forget_split.retain, self.salt, self.dataset_dir)
            proof = erasure_proof(
                self.forget_request, self.forget_split, self.trained_items, self.salt, self.dataset_dir, manifest
            )
            self.proof = {**proof, "source_model_sha256": _optional_sha256(self.model_before)}
            self.consumed = ConsumedItems(manifest)

    def consume(self, engine: Engine) -> None:
        """Record the identities of the current batch's items (see :meth:`record`)."""
        if self.forget_request is not None:
            self.record(*batch_identities(engine.state.batch))

    def record(self, identities: Sequence[str], forget_flags: Sequence[bool]) -> None:
        """Record consumed items by identity; ``forget_flags`` tells which ones the strategy unlearns.

        Raises:
            CertificateError: when an item without the forget flag is not in the retained data.
        """
        if self.consumed is None:
            self.check()
        outside = self.consumed.add(identities, forget_flags)
        if outside:
            raise CertificateError(
                f"refusing to certify: batch {self.consumed.batches} gives the trainer {outside} items without the "
                "forget flag that are not in the retained data; stopped before learning from them."
            )

    def __call__(self, engine: Engine) -> None:
        if self.forget_request is None:
            return
        if not self.proof:
            self.check()
        record = read_record(self.model_path)
        model_sha256 = file_sha256(self.model_path)
        if record.get("model_sha256") != model_sha256:
            raise CertificateError(
                f"{self.model_path} does not match its record: attach CertificateWriter after ModelWriter."
            )
        if record.get("source_model_sha256", self.proof["source_model_sha256"]) != self.proof["source_model_sha256"]:
            raise CertificateError(f"the source model {self.model_before} changed during the run: refusing to certify.")
        certificate = {
            "schema_version": SCHEMA_VERSION,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **{key: record.get(key) for key in ("bundle", "workflow", "strategy", "seed")},
            **guarantee_section(record.get("strategy"), self.model_path, self.proof[REQUEST_KEY]),
            "hyperparameters": self.hyperparameters,
            **self.proof,
            "consumed_items": self.consumed.section(),
            "model_file": self.model_path.name,
            "model_sha256": model_sha256,
            "timing": {key: record.get(key) for key in ("seconds", "samples_per_second", "epochs")},
            "versions": package_versions(),
            "mlflow_run_id": self.tracker.run_id if self.tracker else None,
            **self.extra,
        }
        path = certificate_path(self.model_path)
        write_json(path, certificate)
        if self.tracker:
            self.tracker.log_artifact(path, ARTIFACT_DIR)


def certify_copy(
    source_model: str | os.PathLike, copy: str | os.PathLike, changes: Mapping[str, Any], tracker: MLflowTracker
) -> Path | None:
    """Issue ``copy`` (a byte-for-byte copy of a certified model) its own certificate; None when the source has none.

    The proof carries over; the copy gets its own file name, ``changes`` (e.g. its ``strategy`` and how it was
    chosen), a fresh guarantee and evidence, no ``metrics`` (those describe the source's evaluation), and
    ``tracker``'s run as its issuer, where it is logged under ``certificate/``.

    Raises:
        CertificateError: when ``copy`` is not the certified model's bytes.
    """
    source_certificate = certificate_path(source_model)
    if not source_certificate.is_file():
        return None
    certificate = read_certificate(source_certificate)
    copy = Path(copy)
    if file_sha256(copy) != certificate.get("model_sha256"):
        raise CertificateError(f"{copy} is not the model certified by {source_certificate.name}: not certified.")
    certificate.pop("metrics", None)
    certificate |= {
        **changes,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_file": copy.name,
        "copied_from": {"model_file": Path(source_model).name, "certificate_sha256": file_sha256(source_certificate)},
        "mlflow_run_id": tracker.run_id,
    }
    certificate |= guarantee_section(certificate.get("strategy"), copy, certificate[REQUEST_KEY])
    path = certificate_path(copy)
    write_json(path, certificate)
    tracker.log_artifact(path, ARTIFACT_DIR)
    return path


class CertificateMetrics:
    """Add an evaluation's metrics to the evaluated model's certificate, when it has one.

    :meth:`check` runs before the evaluation and refuses a model file that is not the certified one or an
    evaluation for another request. :meth:`add` writes the ``metrics`` section (the model's own metrics, and those
    of the original and the retrained model when they were evaluated for the same request) and renews the
    guarantee's evidence from the new evaluation, rewrites the certificate atomically and logs it to this
    evaluation's run and to the certifying run under ``certificate/``.

    Args:
        model_path: the evaluated model file.
        forget_request_sha256: the salted hash of the request the evaluation splits the data by.
        original_model: the original model file, or None.
        retrained_model: the model's exact counterpart (the retrained model; for SISA the sharded retraining), or
            None.
        tracker: the evaluation's MLflow run, or None.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        forget_request_sha256: str,
        original_model: str | os.PathLike | None = None,
        retrained_model: str | os.PathLike | None = None,
        tracker: MLflowTracker | None = None,
    ):
        self.model_path = Path(model_path)
        self.path = certificate_path(self.model_path)
        self.forget_request_sha256 = forget_request_sha256
        self.references = {"original": original_model, "retrained": retrained_model}
        self.tracker = tracker

    def check(self) -> dict[str, Any] | None:
        """The certificate, checked against the model file and the request; None when there is none.

        Raises:
            CertificateError: when the model file's SHA-256 or the request differs from the certified one.
        """
        if not self.path.is_file():
            return None
        certificate = read_certificate(self.path)
        model_sha256 = file_sha256(self.model_path)
        if certificate.get("model_sha256") != model_sha256:
            raise CertificateError(
                f"{self.model_path} is not the model its certificate {self.path.name} was issued for (SHA-256 "
                f"{model_sha256[:12]}... versus {str(certificate.get('model_sha256'))[:12]}...): refusing to add "
                "metrics."
            )
        if certificate.get(REQUEST_KEY) != self.forget_request_sha256:
            raise CertificateError(
                f"{self.model_path} was certified for a different forget request than this evaluation's: evaluate it "
                "with the request it was made for."
            )
        return certificate

    def add(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Write ``metrics`` and the references' metrics into the certificate; returns ``metrics``."""
        certificate = self.check()
        if certificate is None:
            return dict(metrics)
        section: dict[str, Any] = {"model": _numbers(metrics)}
        for role, model in self.references.items():
            evaluation = self._reference_metrics(role, model)
            if evaluation:
                section[role] = evaluation
        certificate["metrics"] = section
        certificate |= guarantee_section(certificate.get("strategy"), self.model_path, self.forget_request_sha256)
        write_json(self.path, certificate)
        if self.tracker:
            self.tracker.log_artifact(self.path, ARTIFACT_DIR)
            self._log_to_certifying_run(certificate.get("mlflow_run_id"))
        return dict(metrics)

    def _reference_metrics(self, role: str, model: str | os.PathLike | None) -> dict[str, float]:
        if not model or Path(model).resolve() == self.model_path.resolve():
            return {}
        path = evaluation_path(model)
        if not path.is_file():
            return {}
        evaluation = read_json(path)
        if evaluation.get(REQUEST_KEY) != self.forget_request_sha256:
            logger.warning(
                "The %s model %s was evaluated for another request: left out of the certificate.", role, model
            )
            return {}
        return _numbers(evaluation)

    def _log_to_certifying_run(self, run_id: str | None) -> None:
        if not run_id or run_id == self.tracker.run_id:
            return
        try:
            self.tracker.client.log_artifact(run_id, str(self.path), ARTIFACT_DIR)
        except MlflowException:
            logger.warning("The run that issued %s is not in this tracking store: not updated there.", self.path.name)


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}
