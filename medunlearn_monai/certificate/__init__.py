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

The code is in three layers: :mod:`~medunlearn_monai.certificate.manifest` (the retain manifest, the erasure proof,
the consumed items), :mod:`~medunlearn_monai.certificate.issue` (writing and completing certificates, the
guarantee and its evidence) and :mod:`~medunlearn_monai.certificate.verify` (re-checking one); every public name
is importable from this package.
"""

from medunlearn_monai.certificate.issue import (
    APPROXIMATE,
    ARTIFACT_DIR,
    CLASSIFIER_EVIDENCE,
    EVIDENCE,
    EXACT,
    EXACT_STRATEGIES,
    GUARANTEES,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    CertificateMetrics,
    CertificateWriter,
    certify_copy,
    evaluation_evidence,
    guarantee_of,
    guarantee_section,
    package_versions,
    read_certificate,
)
from medunlearn_monai.certificate.manifest import (
    CONSUMED_ITEMS,
    ITEM_IDENTITY,
    CertificateError,
    ConsumedItems,
    RetainManifest,
    batch_identities,
    erasure_proof,
    identities_digest,
    retain_manifest,
)
from medunlearn_monai.certificate.verify import (
    Verdict,
    guarantee_lines,
    learned_items_verdict,
    require_all_passed,
    verify_certificate,
)

__all__ = [
    "APPROXIMATE",
    "ARTIFACT_DIR",
    "CLASSIFIER_EVIDENCE",
    "CONSUMED_ITEMS",
    "CertificateError",
    "CertificateMetrics",
    "CertificateWriter",
    "ConsumedItems",
    "EVIDENCE",
    "EXACT",
    "EXACT_STRATEGIES",
    "GUARANTEES",
    "ITEM_IDENTITY",
    "READABLE_VERSIONS",
    "RetainManifest",
    "SCHEMA_VERSION",
    "Verdict",
    "batch_identities",
    "certify_copy",
    "erasure_proof",
    "evaluation_evidence",
    "guarantee_lines",
    "guarantee_of",
    "guarantee_section",
    "identities_digest",
    "learned_items_verdict",
    "package_versions",
    "read_certificate",
    "require_all_passed",
    "retain_manifest",
    "verify_certificate",
]
