"""MLflow datasets with chosen digests, handed to a tracker as medunlearn_monai.lineage.DataLineage hands its own."""

from __future__ import annotations

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT


class KnownDatasets:
    """One dataset per context, with the given digest."""

    def __init__(self, digests: dict[str, str]):
        self.digests = digests

    def dataset_inputs(self) -> list[DatasetInput]:
        return [
            DatasetInput(Dataset(f"data:{context}", digest, "local", "{}"), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
            for context, digest in self.digests.items()
        ]
