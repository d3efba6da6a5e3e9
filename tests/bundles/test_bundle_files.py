"""Static checks of every bundle: metadata against MONAI's schema, the files model-zoo requires."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import monai.bundle
import pytest

from medunlearn_monai.workflows import BUNDLES_DIR

SCHEMA_FILE = Path(__file__).parent.parent / "resources" / "meta_schema_20240725.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
SCHEMA_MD5 = hashlib.md5(SCHEMA_FILE.read_bytes()).hexdigest()
BUNDLES = sorted(path for path in BUNDLES_DIR.iterdir() if (path / "configs" / "metadata.json").is_file())


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda path: path.name)
def test_metadata_is_valid_against_monai_schema(bundle, tmp_path):
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["schema"].endswith(SCHEMA_FILE.name)
    # MONAI's own check; it downloads the schema unless the file is already there, so it gets the offline copy.
    schema = tmp_path / SCHEMA_FILE.name
    shutil.copyfile(SCHEMA_FILE, schema)
    monai.bundle.verify_metadata(
        meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema), hash_val=SCHEMA_MD5
    )
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


def test_monai_verify_metadata_rejects_a_metadata_file_the_schema_forbids(tmp_path):
    schema = tmp_path / SCHEMA_FILE.name
    shutil.copyfile(SCHEMA_FILE, schema)
    metadata = json.loads((BUNDLES[0] / "configs" / "metadata.json").read_text())
    del metadata["network_data_format"]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="network_data_format"):
        monai.bundle.verify_metadata(
            meta_file=str(tmp_path / "metadata.json"), filepath=str(schema), hash_val=SCHEMA_MD5
        )
