"""Model-zoo checks that need a model or data: TorchScript export, and the workflow properties MONAI apps rely on.

Models are randomly initialised networks of each bundle's own ``network_def``, saved the way ``ModelWriter`` saves
them; the segmenter is exported at ResNet depth 10 (the depth-50 file would be about 180 MB) from a copy of the
bundle whose ``inference.json`` says so, because the exported file embeds that config for MONAI Deploy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_copies import copy_bundle, export_torchscript, write_random_model
from monai.bundle import ConfigWorkflow

from medunlearn_monai.data.synthetic import (
    write_synthetic_chexpert,
    write_synthetic_mrbrains18,
    write_synthetic_tissuemnist,
)
from medunlearn_monai.workflows import BUNDLES_DIR, config_files

SEGMENTATION = "mrbrains18_med3d_segmentation"
BUNDLES = ["tissuemnist_resnet_classification", "chexpert_resnet_classification", SEGMENTATION]
SMALL_SEGMENTER = {"depth": 10}


def input_shape(bundle: Path) -> list[int]:
    image = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    return [2, image["num_channels"], *image["spatial_shape"]]


@pytest.mark.parametrize("name", BUNDLES)
def test_torchscript_export_embeds_the_configs_and_predicts_like_the_eager_model(name, tmp_path):
    bundle = copy_bundle(name, tmp_path, **(SMALL_SEGMENTER if name == SEGMENTATION else {}))
    network = write_random_model(bundle, bundle / "models" / "model.pt")
    export_torchscript(bundle)
    extra_files = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"), _extra_files=extra_files)
    # MONAI Deploy's bundle operator rebuilds pre/postprocessing and the inferer from these embedded files.
    assert json.loads(extra_files["inference.json"]) == json.loads((bundle / "configs" / "inference.json").read_text())
    assert json.loads(extra_files["metadata.json"])["network_data_format"]["outputs"]["pred"]["num_channels"] > 1
    torch.manual_seed(1)
    image = torch.rand(input_shape(bundle))
    with torch.no_grad():
        eager, exported = network(image), scripted(image)
    assert exported.shape == eager.shape
    torch.testing.assert_close(exported, eager, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Overrides that point every bundle at a few synthetic items and keep its network small."""
    root = tmp_path_factory.mktemp("data")
    write_synthetic_tissuemnist(root / "tissuemnist" / "tissuemnist.npz", n_train=48, n_val=8, n_test=8)
    chexpert = write_synthetic_chexpert(root / "chexpert", n_patients=12, size=32, n_valid_patients=2)
    write_synthetic_mrbrains18(
        root / "mrbrains18", n_subjects=3, spacing=(4.0, 4.0, 6.0), subject_ids=["s1", "s2", "s3"]
    )
    return {
        # batch sizes below the item counts: training refuses a loader that would yield no full batch
        "tissuemnist_resnet_classification": {"dataset_dir": str(root / "tissuemnist"), "batch_size": 16},
        "chexpert_resnet_classification": {"dataset_dir": str(chexpert), "image_size": 32, "batch_size": 8},
        SEGMENTATION: {
            "dataset_dir": str(root / "mrbrains18"),
            "test_subjects": ["s3"],
            "pixdim": [4.0, 4.0, 6.0],
            "roi_size": [32, 32, 16],
            **SMALL_SEGMENTER,
        },
    }


@pytest.fixture
def mlflow_store(tmp_path_factory, monkeypatch):
    """One MLflow store for the module: the train workflows start a run at initialisation, and creating a store per
    test would dominate their time."""
    store = tmp_path_factory.getbasetemp() / "verification-mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")


@pytest.mark.parametrize(
    ("workflow", "workflow_type"), [("inference", "infer"), ("train", "train"), ("unlearn", "train")]
)
@pytest.mark.parametrize("name", BUNDLES)
def test_workflow_has_every_property_monai_deploy_and_label_read(
    name, workflow, workflow_type, tiny_data, mlflow_store, tmp_path
):
    """``check_properties`` lists required properties that are missing and optional ones at the wrong config ID."""
    root = BUNDLES_DIR / name
    overrides = dict(tiny_data[name])
    if workflow == "unlearn":
        overrides.update(forget_fraction=0.3, model_dir=str(tmp_path / "models"))
    if workflow == "inference":
        overrides = {key: value for key, value in overrides.items() if key in ("dataset_dir", *SMALL_SEGMENTER)}
    bundle_workflow = ConfigWorkflow(
        config_file=config_files(name, workflow, "ft" if workflow == "unlearn" else None),
        meta_file=str(root / "configs" / "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=str(root),
        **overrides,
    )
    if workflow == "unlearn":  # unlearning starts from an original model, which initialisation checks
        original = Path(bundle_workflow.parser.get_parsed_content("original_model"))
        original.parent.mkdir(parents=True)
        torch.save(bundle_workflow.parser.get_parsed_content("network_def").state_dict(), original)
    bundle_workflow.initialize()
    try:
        assert bundle_workflow.check_properties() == []
        assert isinstance(bundle_workflow.network_def, torch.nn.Module)
        if workflow_type == "train":
            assert bundle_workflow.max_epochs > 0 and len(bundle_workflow.train_dataset) > 0
    finally:
        bundle_workflow.finalize()


def test_check_properties_reports_a_preprocessing_at_the_wrong_id(tiny_data, mlflow_store):
    name = "tissuemnist_resnet_classification"
    root = BUNDLES_DIR / name
    bundle_workflow = ConfigWorkflow(
        config_file=config_files(name, "train"),
        meta_file=str(root / "configs" / "metadata.json"),
        workflow_type="train",
        bundle_root=str(root),
        **{**tiny_data[name], "train#dataset#transform": "@preprocessing"},
    )
    bundle_workflow.initialize()
    try:
        assert bundle_workflow.check_properties() == ["train_preprocessing"]
    finally:
        bundle_workflow.finalize()
