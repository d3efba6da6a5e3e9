"""Verifying an erasure certificate: the model file, the request and the retain manifest rebuilt from the data, and
the items the trainer learned from; what the certificate guarantees, in words.

What a certificate holds and means: :mod:`medunlearn_monai.certificate`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai.bundle

from medunlearn_monai.certificate.issue import (
    EVIDENCE,
    EXACT,
    GUARANTEES,
    evaluation_evidence,
    guarantee_of,
    read_certificate,
)
from medunlearn_monai.certificate.manifest import CertificateError, RetainManifest, identities_digest, retain_manifest
from medunlearn_monai.records import REQUEST_KEY, evaluation_path, file_sha256
from medunlearn_monai.workflows import bundle_dir, config_files


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
    passed = identities_digest(found) == consumed.get("learned_sha256") and len(found) == learned
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
