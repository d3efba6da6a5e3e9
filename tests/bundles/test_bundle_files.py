"""Static checks of every bundle: metadata against MONAI's schema, the files model-zoo requires."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import monai.bundle
import pytest

from medunlearn_monai.workflows import BUNDLES_DIR

SCHEMA = json.loads((Path(__file__).parent.parent / "resources" / "meta_schema_20240725.json").read_text())
BUNDLES = sorted(path for path in BUNDLES_DIR.iterdir() if (path / "configs" / "metadata.json").is_file())


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda path: path.name)
def test_metadata_is_valid_against_monai_schema(bundle):
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(metadata, SCHEMA)
    assert metadata["version"] in metadata["changelog"]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda path: path.name)
def test_bundle_has_the_files_model_zoo_and_monai_label_expect(bundle):
    for name in [
        "LICENSE",
        "docs/README.md",
        "configs/inference.json",
        "configs/logging.conf",
        "configs/common.json",
        "configs/train.json",
        "configs/unlearn.json",
        "configs/evaluate.json",
    ]:
        assert (bundle / name).is_file(), name
    assert any(task in bundle.name for task in ("classification", "segmentation"))


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda path: path.name)
def test_inference_config_is_self_contained(bundle):
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    for key in [
        "bundle_root",
        "device",
        "dataset_dir",
        "dataset",
        "evaluator",
        "network_def",
        "inferer",
        "preprocessing",
        "postprocessing",
    ]:
        assert key in inference, key


def test_schema_rejects_metadata_without_required_keys():
    with pytest.raises(jsonschema.ValidationError, match="network_data_format"):
        jsonschema.validate({key: "x" for key in SCHEMA["required"] if key != "network_data_format"}, SCHEMA)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda path: path.name)
def test_network_matches_its_declared_input_and_output_format(bundle):
    # MONAI's own check: a random input of the metadata's shape gives the declared output channels and dtype.
    monai.bundle.verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
    )
