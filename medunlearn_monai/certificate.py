"""The erasure certificate of one retraining or unlearning run: evidence that a forget request was carried out.

``<model>.certificate.json`` sits beside the new model and in its MLflow run (``certificate/``). It names no subject
and holds no salt: the request appears as its salted SHA-256 (the salt stays with the deployment, see
:func:`medunlearn_monai.forget.load_salt`) and the retained training data as the hash of its *retain manifest*.

The retain manifest is the SHA-256 of the sorted identities of the retained training items, one per line (an item's
identity: :func:`medunlearn_monai.identities.item_identity`). Sorting makes it independent of the loader's order.
Whoever holds the salt, the data and the request can rebuild it (``medunlearn verify-certificate``), and one
forgotten item put back into the retained data changes it.

The manifest says what the run *should* train on; ``consumed_items`` records what it *did*: the identities the
trainer's batches carried (:func:`medunlearn_monai.identities.with_item_identities`), split by the ``forget`` flag.
The run stops as soon as a batch holds an unflagged item outside the manifest, and the verifier checks the record
against the manifest it rebuilds, so the check does not rest on the run's own word.

A certificate also says what kind of erasure it certifies (``guarantee``): ``exact`` for retraining and SISA, whose
weights never saw the forgotten subjects, ``approximate`` for every strategy that edits weights trained on them;
an approximate certificate lists the evaluation evidence beside the model and what is still missing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ignite
import ignite.distributed as idist
import mlflow
import monai
import monai.bundle
import numpy as np
import torch
from ignite.engine import Engine, Events
from mlflow.exceptions import MlflowException

import medunlearn_monai
from medunlearn_monai.forget import FORGET_KEY, SUBJECT_KEY, ForgetRequest, ForgetSplit, hash_subject
from medunlearn_monai.identities import ITEM_IDENTITY_KEY, item_identity
from medunlearn_monai.metrics.evaluation import REQUEST_KEY
from medunlearn_monai.model_io import certificate_path, evaluation_path, file_sha256, read_json, read_record, write_json
from medunlearn_monai.tracking import MLflowTracker
from medunlearn_monai.workflows import bundle_dir, config_files

logger = logging.getLogger(__name__)
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 lacks guarantee and consumed_items; it is read, and fails their check
ARTIFACT_DIR = "certificate"
ITEM_IDENTITY = (
    "sha256(salted subject sha256 + NUL + item key); item key = image path(s) relative to dataset_dir, "
    "or sha256 of an in-memory image array's dtype, shape and bytes"
)
CONSUMED_ITEMS = (
    "salted item identities read from the trainer's batches (SISA: also the slices of reused checkpoints, matched "
    "by digest); learned = without the forget flag; learned_in_manifest = base64 bitmap over the sorted distinct "
    "retain-manifest identities, most significant bit first, 1 = learned"
)
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

    def bitmap(self, chosen: Iterable[str]) -> str:
        """Base64 bitmap over the sorted distinct identities, most significant bit first: 1 for each chosen one."""
        chosen = set(chosen)
        bits = np.array([identity in chosen for identity in sorted(self.identities)], dtype=bool)
        return base64.b64encode(np.packbits(bits).tobytes()).decode()

    def chosen(self, bitmap: str) -> list[str]:
        """The identities a :meth:`bitmap` marks.

        Raises:
            ValueError: when ``bitmap`` is not base64 or was made over a manifest of another size.
        """
        ordered = sorted(self.identities)
        packed = np.frombuffer(base64.b64decode(bitmap, validate=True), dtype=np.uint8)
        if len(packed) != (len(ordered) + 7) // 8:
            raise ValueError(f"a bitmap of {len(packed)} bytes does not cover a manifest of {len(ordered)} items.")
        bits = np.unpackbits(packed)[: len(ordered)]
        return [identity for identity, bit in zip(ordered, bits, strict=True) if bit]


def retain_manifest(items: Sequence[Mapping[str, Any]], salt: bytes, dataset_dir: str | os.PathLike) -> RetainManifest:
    """The manifest of ``items`` (the retained training items of a request)."""
    identities = sorted(item_identity(item, salt, dataset_dir) for item in items)
    return RetainManifest(
        sha256=_digest(identities),
        items=len(items),
        subject_hashes=frozenset(hash_subject(item[SUBJECT_KEY], salt) for item in items),
        identities=frozenset(identities),
    )


def _digest(sorted_identities: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted_identities).encode()).hexdigest()


def erasure_proof(
    request: ForgetRequest,
    split: ForgetSplit,
    trained_items: Sequence[Mapping[str, Any]],
    salt: bytes,
    dataset_dir: str | os.PathLike,
    manifest: RetainManifest | None = None,
) -> dict[str, Any]:
    """The request's hash, the data counts and the retain manifest, checked before anything is trained.

    ``trained_items`` are the items the run trains on; unlearning lists forget items among them, flagged
    ``forget`` for the strategy's handlers. Every unflagged one must be in the retain manifest. ``manifest`` is
    ``split.retain``'s when already built.

    Raises:
        CertificateError: when a forgotten subject has an item in the retained data, or the run would train
            normally on an item outside it.
    """
    manifest = manifest or retain_manifest(split.retain, salt, dataset_dir)
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


def batch_identities(batch: Any) -> tuple[list[str], list[bool]]:
    """The salted item identities of one collated batch and their ``forget`` flags (all False when unflagged).

    Raises:
        CertificateError: when the batch carries no identities, or not one per flag.
    """
    if not isinstance(batch, Mapping) or ITEM_IDENTITY_KEY not in batch:
        raise CertificateError(
            f"the trainer's batches carry no '{ITEM_IDENTITY_KEY}': the training dataset's transform must start with "
            "medunlearn_monai.identities.with_item_identities(...) for the certificate to record what the run learns."
        )
    identities = [str(identity) for identity in batch[ITEM_IDENTITY_KEY]]
    flags = batch.get(FORGET_KEY)
    forget = [False] * len(identities) if flags is None else torch.as_tensor(flags).reshape(-1).bool().tolist()
    if len(forget) != len(identities):
        raise CertificateError(f"a batch holds {len(identities)} item identities but {len(forget)} forget flags.")
    return identities, forget


class ConsumedItems:
    """The items a trainer consumed, by salted identity, checked against the retain manifest as they come.

    Args:
        manifest: the retain manifest of the run's request.
    """

    def __init__(self, manifest: RetainManifest):
        self.manifest = manifest
        self.learned: set[str] = set()
        self.forget_flagged: set[str] = set()
        self.batches = 0

    def add(self, identities: Sequence[str], forget_flags: Sequence[bool]) -> int:
        """Record one batch; returns how many of its unflagged items are outside the manifest."""
        self.batches += 1
        learned = {identity for identity, flag in zip(identities, forget_flags, strict=True) if not flag}
        self.learned |= learned
        self.forget_flagged |= {identity for identity, flag in zip(identities, forget_flags, strict=True) if flag}
        return len(learned - self.manifest.identities)

    def section(self) -> dict[str, Any]:
        """The certificate's ``consumed_items``: counts, the learned items' digest and their manifest bitmap."""
        return {
            "recorded": CONSUMED_ITEMS,
            "batches": self.batches,
            "processes_recorded": f"1 of {idist.get_world_size()}",
            "learned_items": len(self.learned),
            "learned_sha256": _digest(sorted(self.learned)),
            "learned_in_manifest": self.manifest.bitmap(self.learned),
            "learned_outside_manifest": len(self.learned - self.manifest.identities),
            "forget_flagged_items": len(self.forget_flagged),
        }


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
        available["gap_reference"] = evaluation.get("reference_model")
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
    """Re-check a certificate: the model file's SHA-256, the request and retain manifest rebuilt from the data, and
    the items the trainer learned from (its ``consumed_items``) against that rebuilt manifest.

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
    verdicts.append(learned_items_verdict(certificate.get("consumed_items"), manifest))
    return verdicts


def learned_items_verdict(consumed: Mapping[str, Any] | None, manifest: RetainManifest) -> Verdict:
    """Whether every item the trainer learned from, as recorded, is in ``manifest`` (rebuilt from data and request).

    The record's bitmap marks the learned items among the manifest's; they must hash to the recorded digest of
    all learned items, so one learned item outside the rebuilt retained data fails the check.
    """
    check = "learned_items_retained"
    if not consumed:
        return Verdict(check, False, "the certificate has no record of the items the trainer consumed")
    try:
        found = manifest.chosen(str(consumed.get("learned_in_manifest", "")))
    except ValueError as error:
        return Verdict(check, False, f"the record of learned items does not fit the rebuilt retained data: {error}")
    learned = consumed.get("learned_items")
    passed = _digest(found) == consumed.get("learned_sha256") and len(found) == learned
    detail = f"{len(found)} of the {learned} items the trainer learned from are in the retained data rebuilt here"
    if consumed.get("forget_flagged_items"):
        detail += f"; {consumed['forget_flagged_items']} forget items were given to it flagged, to be unlearned"
    return Verdict(check, passed, detail)


def guarantee_lines(certificate_file: str | os.PathLike, model_path: str | os.PathLike) -> list[str]:
    """What the certificate guarantees, in words; for an approximate one, the evidence beside ``model_path`` (an
    evaluation of this very file for the certified request) and what is missing."""
    certificate = read_certificate(certificate_file)
    kind = guarantee_of(certificate.get("strategy"))
    lines = [f"guarantee: {kind} ({certificate.get('strategy')}): {GUARANTEES[kind]}"]
    if kind == EXACT:
        return lines
    evidence = evaluation_evidence(model_path, file_sha256(model_path), str(certificate.get(REQUEST_KEY)))
    available = evidence["available"]
    if available:
        shown = [
            f"{name} {available[name]:.3f}"
            + (f" (against {available['gap_reference']})" if name == "gap_to_retrain" else "")
            for name in EVIDENCE
            if name in available
        ]
        lines.append(f"evidence ({evidence['evaluation']}): {', '.join(shown)}")
    else:
        lines.append(
            f"evidence: none: no evaluation of this model file for this request at {evaluation_path(model_path)}"
        )
    missing = [f"{name} ({how})" for name, how in evidence["missing"].items()]
    lines.append(f"missing: {'; '.join(missing) if missing else 'nothing'}")
    return lines


def require_all_passed(verdicts: Sequence[Verdict]) -> str:
    """A one-line summary when every check passed.

    Raises:
        CertificateError: naming the checks that failed.
    """
    failed = [verdict.check for verdict in verdicts if not verdict.passed]
    if failed:
        raise CertificateError(f"{len(failed)} of {len(verdicts)} certificate checks failed: {', '.join(failed)}.")
    return f"certificate verified: all {len(verdicts)} checks passed."
