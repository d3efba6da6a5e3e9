"""The retained training items as salted identities (the *retain manifest*), the proof that a forget request's
subjects are out of them, and the record of the items a trainer consumed.

The retain manifest is the SHA-256 of the sorted identities of the retained training items, one per line (an item's
identity: :func:`medunlearn_monai.identities.item_identity`). Sorting makes it independent of the loader's order.
What a certificate is and how it is issued and verified: :mod:`medunlearn_monai.certificate`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch

from medunlearn_monai.forget import FORGET_KEY, SUBJECT_KEY, ForgetRequest, ForgetSplit, hash_subject
from medunlearn_monai.identities import ITEM_IDENTITY_KEY, item_identity
from medunlearn_monai.records import REQUEST_KEY

ITEM_IDENTITY = (
    "sha256(salted subject sha256 + NUL + item key); item key = image path(s) relative to dataset_dir, "
    "or sha256 of an in-memory image array's dtype, shape and bytes"
)
CONSUMED_ITEMS = (
    "salted item identities read from the trainer's batches (SISA: also the slices of reused checkpoints, matched "
    "by digest); learned = without the forget flag; learned_in_manifest = base64 bitmap over the sorted distinct "
    "retain-manifest identities, most significant bit first, 1 = learned"
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
        sha256=identities_digest(identities),
        items=len(items),
        subject_hashes=frozenset(hash_subject(item[SUBJECT_KEY], salt) for item in items),
        identities=frozenset(identities),
    )


def identities_digest(sorted_identities: Sequence[str]) -> str:
    """SHA-256 of sorted item identities, one per line: a retain manifest's hash, or the learned items'."""
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
            "learned_sha256": identities_digest(sorted(self.learned)),
            "learned_in_manifest": self.manifest.bitmap(self.learned),
            "learned_outside_manifest": len(self.learned - self.manifest.identities),
            "forget_flagged_items": len(self.forget_flagged),
        }
