"""Re-checking the erasure certificate of a guest bundle's model, as ``medunlearn verify-certificate`` does for ours.

The request, the salt and the retained items come from the guest's training config with our overlays (the
:class:`~medunlearn_monai.guest.workflows.GuestRun` of its ``train`` workflow, with the run's overrides); the checks
are :mod:`medunlearn_monai.certificate`'s: the model file's SHA-256, the request's hash, the retain manifest and the
items the trainer learned from.
"""

from __future__ import annotations

import os
from pathlib import Path

from medunlearn_monai.certificate import (
    CertificateError,
    Verdict,
    learned_items_verdict,
    read_certificate,
    retain_manifest,
)
from medunlearn_monai.guest.workflows import GuestRun
from medunlearn_monai.records import REQUEST_KEY, file_sha256


def verify_guest_certificate(
    run: GuestRun, certificate_file: str | os.PathLike, model_path: str | os.PathLike
) -> list[Verdict]:
    """The verdicts on a certificate of a model made by ``run``'s guest, its data rebuilt from ``run``'s config.

    Raises:
        FileNotFoundError: when the certificate or the model file does not exist.
        CertificateError: when the certificate is unreadable or ``run`` has no forget request.
    """
    certificate = read_certificate(certificate_file)
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model file {model_path} does not exist.")
    parser = run.parser()
    request = parser.get_parsed_content("forget_request")
    if request is None:
        raise CertificateError("verification needs the forget request: pass --forget_request_file FILE.")
    salt = parser.get_parsed_content("salt")
    model_sha256, certified_sha256 = file_sha256(model_path), str(certificate.get("model_sha256"))
    same_request = request.sha256(salt) == certificate.get(REQUEST_KEY)
    split = parser.get_parsed_content("forget_split")
    manifest = retain_manifest(split.retain, salt, parser.get_parsed_content("guest_data_root"))
    certified = certificate.get("retain_manifest", {})
    return [
        Verdict(
            "model_sha256",
            model_sha256 == certified_sha256,
            f"{model_sha256[:16]}... (certified {certified_sha256[:16]}...)",
        ),
        Verdict(
            "forget_request_sha256",
            same_request,
            "the request hashes to the certified one" if same_request else "the request or the salt differs",
        ),
        Verdict(
            "retain_manifest_sha256",
            manifest.sha256 == certified.get("sha256"),
            f"{manifest.items} retained items rebuilt from the data (certified {certified.get('items')})",
        ),
        learned_items_verdict(certificate.get("consumed_items"), manifest),
    ]
