"""The erasure certificate of one retraining or unlearning run: evidence that a forget request was carried out.

``<model>.certificate.json`` sits beside the new model and in its MLflow run (``certificate/``). It names no subject
and holds no salt: the request appears as its salted SHA-256 (the salt stays with the deployment, see
:func:`medunlearn_monai.forget.load_salt`) and the retained training data as the hash of its *retain manifest*.

The retain manifest is the SHA-256 of the sorted identities of the retained training items, one per line. An item's
identity is ``sha256(<salted subject SHA-256> NUL <item key>)``, where the item key is the image file path(s)
relative to the bundle's ``dataset_dir`` (CheXpert, MRBrainS18) or, for images held in memory (MedMNIST), the
SHA-256 of the array's dtype, shape and bytes. Relative paths keep the hash valid when the data moves; sorting
makes it independent of the loader's order. Whoever holds the salt, the data and the request can rebuild it
(``medunlearn verify-certificate``), and one forgotten item put back into the retained data changes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ignite
import mlflow
import monai
import monai.bundle
import numpy as np
import torch
from ignite.engine import Engine, Events
from mlflow.exceptions import MlflowException

import medunlearn_monai
from medunlearn_monai.forget import FORGET_KEY, SUBJECT_KEY, ForgetRequest, ForgetSplit, hash_subject
from medunlearn_monai.metrics.evaluation import REQUEST_KEY
from medunlearn_monai.model_io import certificate_path, evaluation_path, file_sha256, read_json, read_record, write_json
from medunlearn_monai.tracking import MLflowTracker
from medunlearn_monai.workflows import bundle_dir, config_files

logger = logging.getLogger(__name__)
SCHEMA_VERSION = 1
ARTIFACT_DIR = "certificate"
ITEM_IDENTITY = (
    "sha256(salted subject sha256 + NUL + item key); item key = image path(s) relative to dataset_dir, "
    "or sha256 of an in-memory image array's dtype, shape and bytes"
)


class CertificateError(ValueError):
    """A certificate that cannot be issued, updated or verified as asked."""


@dataclass(frozen=True)
class RetainManifest:
    """The retained training items, as salted identities only: their hash, count and subjects' salted hashes."""

    sha256: str
    items: int
    subject_hashes: frozenset[str]
    identities: frozenset[str]

    def forgotten_subjects(self, request: ForgetRequest, salt: bytes) -> int:
        """How many of the request's subjects have an item in the manifest: 0 is the proof of erasure."""
        return len(self.subject_hashes & set(request.subject_hashes(salt)))


def item_key(item: Mapping[str, Any], dataset_dir: str | os.PathLike) -> str:
    """The stable key of one item's image: relative path(s) for files, a content digest for arrays.

    Raises:
        TypeError: when the image is neither path(s) nor an array.
    """
    image = item["image"]
    paths = [image] if isinstance(image, (str, os.PathLike)) else image
    if isinstance(paths, (list, tuple)) and all(isinstance(path, (str, os.PathLike)) for path in paths):
        root = os.path.abspath(dataset_dir)
        return "|".join(Path(os.path.relpath(os.path.abspath(path), root)).as_posix() for path in paths)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        array = np.ascontiguousarray(image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image)
        header = f"{array.dtype.str}{array.shape}".encode()
        return hashlib.sha256(header + b"\x00" + array.tobytes()).hexdigest()
    raise TypeError(f"cannot key an item whose image is a {type(image).__name__}; expected path(s) or an array.")


def item_identity(item: Mapping[str, Any], salt: bytes, dataset_dir: str | os.PathLike) -> str:
    """Salted identity of one item: its subject's salted hash joined with its :func:`item_key`, hashed."""
    subject = hash_subject(item[SUBJECT_KEY], salt)
    return hashlib.sha256(f"{subject}\x00{item_key(item, dataset_dir)}".encode()).hexdigest()


def retain_manifest(items: Sequence[Mapping[str, Any]], salt: bytes, dataset_dir: str | os.PathLike) -> RetainManifest:
    """The manifest of ``items`` (the retained training items of a request)."""
    identities = sorted(item_identity(item, salt, dataset_dir) for item in items)
    return RetainManifest(
        sha256=hashlib.sha256("\n".join(identities).encode()).hexdigest(),
        items=len(items),
        subject_hashes=frozenset(hash_subject(item[SUBJECT_KEY], salt) for item in items),
        identities=frozenset(identities),
    )


def erasure_proof(
    request: ForgetRequest,
    split: ForgetSplit,
    trained_items: Sequence[Mapping[str, Any]],
    salt: bytes,
    dataset_dir: str | os.PathLike,
) -> dict[str, Any]:
    """The request's hash, the data counts and the retain manifest, checked before anything is trained.

    ``trained_items`` are the items the run trains on; unlearning lists forget items among them, flagged
    ``forget`` for the strategy's handlers. Every unflagged one must be in the retain manifest.

    Raises:
        CertificateError: when a forgotten subject has an item in the retained data, or the run would train
            normally on an item outside it.
    """
    manifest = retain_manifest(split.retain, salt, dataset_dir)
    forgotten = manifest.forgotten_subjects(request, salt)
    if forgotten:
        raise CertificateError(
            f"refusing to certify: {forgotten} of the {len(request.subject_ids)} forgotten subjects have items in the "
            "retained training data."
        )
    learned = [item for item in trained_items if not item.get(FORGET_KEY)]
    outside = sum(item_identity(item, salt, dataset_dir) not in manifest.identities for item in learned)
    if outside:
        raise CertificateError(
            f"refusing to certify: the run would train on {outside} items that are not in the retained data."
        )
    return {
        REQUEST_KEY: request.sha256(salt),
        "counts": {
            "forgotten_subjects": len(request.subject_ids),
            "forgotten_items": len(split.forget),
            "retained_subjects": len(manifest.subject_hashes),
            "retained_items": manifest.items,
            "trained_items": len(trained_items),
            "trained_forget_items": len(trained_items) - len(learned),
        },
        "retain_manifest": {
            "sha256": manifest.sha256,
            "items": manifest.items,
            "item_identity": ITEM_IDENTITY,
            "forgotten_subjects_in_manifest": forgotten,
        },
    }


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
    if not isinstance(certificate, dict) or certificate.get("schema_version") != SCHEMA_VERSION:
        version = certificate.get("schema_version") if isinstance(certificate, dict) else None
        raise CertificateError(f"{path} has schema version {version!r}; this version reads {SCHEMA_VERSION}.")
    return certificate


def _optional_sha256(path: str | os.PathLike | None) -> str | None:
    return file_sha256(path) if path and Path(path).is_file() else None


class CertificateWriter:
    """Certify a retraining or unlearning run: check the erasure before training, write the certificate after it.

    At ``STARTED`` the retain manifest is built and checked (:func:`erasure_proof`), so a run that would break the
    request fails before training. At ``COMPLETED`` ``<model>.certificate.json`` is written atomically with the
    models' SHA-256, the record's strategy, timings and seed, the hyperparameters and package versions, and logged
    to the tracker's run under ``certificate/``. Attach it after :class:`medunlearn_monai.model_io.ModelWriter`,
    whose record it reads. A run without a forget request (the original model) has nothing to certify: the
    handler then does nothing.

    Args:
        model_path: the new model file (the ``ModelWriter`` path).
        forget_request: the request the run carries out, or None.
        forget_split: the training items divided by the request.
        trained_items: the items the trainer runs on (forget items flagged for unlearning).
        salt: the deployment's salt for subject hashes.
        dataset_dir: root of relative item keys (see the module docstring).
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
        # Sections a workflow adds about how it erased, e.g. ``sisa`` with the retrained shards.
        self.extra: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        """Check at start, certify at completion."""
        engine.add_event_handler(Events.STARTED, self.check)
        engine.add_event_handler(Events.COMPLETED, self)

    def check(self, engine: Engine | None = None) -> None:
        """Build and check the erasure proof and hash the model before the run (no-op without a request)."""
        if self.forget_request is not None:
            proof = erasure_proof(
                self.forget_request, self.forget_split, self.trained_items, self.salt, self.dataset_dir
            )
            self.proof = {**proof, "source_model_sha256": _optional_sha256(self.model_before)}

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
            "hyperparameters": self.hyperparameters,
            **self.proof,
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


class CertificateMetrics:
    """Add an evaluation's metrics to the evaluated model's certificate, when it has one.

    :meth:`check` runs before the evaluation and refuses a model file that is not the certified one or an
    evaluation for another request. :meth:`add` writes the ``metrics`` section (the model's own metrics, and those
    of the original and the retrained model when they were evaluated for the same request), rewrites the
    certificate atomically and logs it to this evaluation's run and to the certifying run under ``certificate/``.

    Args:
        model_path: the evaluated model file.
        forget_request_sha256: the salted hash of the request the evaluation splits the data by.
        original_model: the original model file, or None.
        retrained_model: the exactly retrained model file, or None.
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


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification check."""

    check: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.check}: {self.detail}"


def verify_certificate(
    certificate_file: str | os.PathLike, model_path: str | os.PathLike, bundle: str | os.PathLike, **overrides: Any
) -> list[Verdict]:
    """Re-check a certificate: the model file's SHA-256, and the request and retain manifest rebuilt from the data.

    The bundle's train config, with ``overrides`` (``dataset_dir``, ``forget_request_file``, ...) as for the run
    that made the model, yields the items, the request and the deployment's salt.

    Raises:
        FileNotFoundError: when the certificate or the model file does not exist.
        CertificateError: when the certificate is unreadable or no forget request is given.
    """
    certificate = read_certificate(certificate_file)
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model file {model_path} does not exist.")
    model_sha256 = file_sha256(model_path)
    certified_sha256 = str(certificate.get("model_sha256"))
    verdicts = [
        Verdict(
            "model_sha256",
            model_sha256 == certified_sha256,
            f"{model_sha256[:16]}... (certified {certified_sha256[:16]}...)",
        )
    ]
    root = bundle_dir(bundle)
    parser = monai.bundle.ConfigParser()
    parser.read_config(config_files(root, "train"))
    parser.update({"bundle_root": str(root), **overrides})
    request = parser.get_parsed_content("forget_request")
    if request is None:
        raise CertificateError("verification needs the forget request: pass --forget_request_file FILE.")
    salt = parser.get_parsed_content("salt")
    request_sha256 = request.sha256(salt)
    same_request = request_sha256 == certificate.get(REQUEST_KEY)
    verdicts.append(
        Verdict(
            "forget_request_sha256",
            same_request,
            "the request hashes to the certified one" if same_request else "the request or the salt differs",
        )
    )
    split = parser.get_parsed_content("forget_split")
    manifest = retain_manifest(split.retain, salt, parser.get_parsed_content("dataset_dir"))
    certified = certificate.get("retain_manifest", {})
    verdicts.append(
        Verdict(
            "retain_manifest_sha256",
            manifest.sha256 == certified.get("sha256"),
            f"{manifest.items} retained items rebuilt from the data (certified {certified.get('items')})",
        )
    )
    forgotten = manifest.forgotten_subjects(request, salt)
    verdicts.append(
        Verdict("no_forgotten_subject_retained", forgotten == 0, f"{forgotten} forgotten subjects in the retained data")
    )
    return verdicts


def require_all_passed(verdicts: Sequence[Verdict]) -> str:
    """A one-line summary when every check passed.

    Raises:
        CertificateError: naming the checks that failed.
    """
    failed = [verdict.check for verdict in verdicts if not verdict.passed]
    if failed:
        raise CertificateError(f"{len(failed)} of {len(verdicts)} certificate checks failed: {', '.join(failed)}.")
    return f"certificate verified: all {len(verdicts)} checks passed."
