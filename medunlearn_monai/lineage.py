"""Data lineage in MLflow: the data each workflow run used, logged as MLflow datasets that name no subject.

A run's datasets have the context ``train`` (a training without a forget request), or ``retain`` and ``forget`` (a
retraining or unlearning run for a request), plus ``test`` for an evaluation. Each dataset's digest is a salted
hash, so MLflow's Datasets column tells at a glance which request and which retained data a run answers:

- ``train``, ``retain`` and ``test``: the SHA-256 of the sorted salted identities of the items (the certificate's
  retain manifest, :func:`medunlearn_monai.certificate.manifest.retain_manifest`, for ``retain``);
- ``forget``: the request's salted SHA-256, as in the run's params and its erasure certificate.

MLflow caps a dataset digest at :data:`DIGEST_LENGTH` characters, so the digest is the hash's first 36 hex digits
(144 bits); the dataset's profile holds the whole hash and the item and subject counts. The source is the data file
or folder the bundle read. mlflow.data's own dataset classes digest array contents or DataFrames and keep no salt,
so the datasets are built here from MLflow's entities and logged with its client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from medunlearn_monai.certificate.manifest import retain_manifest
from medunlearn_monai.forget import SUBJECT_KEY, ForgetRequest, ForgetSplit, hash_subject

DIGEST_LENGTH = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE
SOURCE_TYPE = "local"
MANIFEST_HASH = "sha256 of the sorted salted item identities, one per line (see medunlearn_monai.certificate)"
REQUEST_HASH = "salted sha256 of the forget request (the certificate's forget_request_sha256)"


@dataclass(frozen=True)
class LineageDataset:
    """One dataset of a run: its context, full salted hash, what the hash is over, and counts."""

    context: str
    sha256: str
    hashed: str
    items: int
    subjects: int

    def dataset_input(self, source: str | os.PathLike) -> DatasetInput:
        """The MLflow dataset input, tagged with its context; its source is ``source``, never an item."""
        dataset = Dataset(
            name=f"{Path(source).name}:{self.context}",
            digest=self.sha256[:DIGEST_LENGTH],
            source_type=SOURCE_TYPE,
            source=json.dumps({"uri": str(Path(source).resolve())}),
            profile=json.dumps(
                {"sha256": self.sha256, "hashed": self.hashed, "items": self.items, "subjects": self.subjects}
            ),
        )
        return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, self.context)])


class DataLineage:
    """The datasets of one workflow run, computed from its items when the run starts.

    Args:
        source: the data file or folder the bundle reads (logged as the datasets' source).
        salt: the deployment's salt.
        dataset_dir: root of relative item keys (see :mod:`medunlearn_monai.identities`).
        forget_split: the training items divided by the request (everything is ``retain`` without one).
        forget_request: the run's request, or None for a training of the original model.
        test_items: the test items, for an evaluation; None for a training or unlearning run.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        salt: bytes,
        dataset_dir: str | os.PathLike,
        forget_split: ForgetSplit,
        forget_request: ForgetRequest | None = None,
        test_items: Sequence[Mapping[str, Any]] | None = None,
    ):
        self.source = source
        self.salt = salt
        self.dataset_dir = dataset_dir
        self.forget_split = forget_split
        self.forget_request = forget_request
        self.test_items = test_items

    def datasets(self) -> list[LineageDataset]:
        """``train`` (no request) or ``retain`` and ``forget``, then ``test`` when test items were given."""
        if self.forget_request is None:
            datasets = [self._manifest("train", self.forget_split.retain)]
        else:
            forget_subjects = {hash_subject(item[SUBJECT_KEY], self.salt) for item in self.forget_split.forget}
            datasets = [
                self._manifest("retain", self.forget_split.retain),
                LineageDataset(
                    "forget",
                    self.forget_request.sha256(self.salt),
                    REQUEST_HASH,
                    len(self.forget_split.forget),
                    len(forget_subjects),
                ),
            ]
        if self.test_items is not None:
            datasets.append(self._manifest("test", self.test_items))
        return datasets

    def dataset_inputs(self) -> list[DatasetInput]:
        """The datasets as MLflow inputs (see :meth:`MLflowClient.log_inputs`)."""
        return [dataset.dataset_input(self.source) for dataset in self.datasets()]

    def _manifest(self, context: str, items: Sequence[Mapping[str, Any]]) -> LineageDataset:
        manifest = retain_manifest(items, self.salt, self.dataset_dir)
        return LineageDataset(context, manifest.sha256, MANIFEST_HASH, manifest.items, len(manifest.subject_hashes))
