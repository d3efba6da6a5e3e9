"""The segmentation bundle loads as a MONAI Label bundle-app model, read the way MONAI Label reads it.

MONAI Label lives in a venv of its own (deploy/README.md), where test_monailabel_server.py runs the real server.
In the project's venv, these tests follow the source of its ``monailabel/tasks/infer/bundle.py`` (0.8.5):
``configs/inference.json`` parsed alone with ``bundle_root`` set, ``network_def`` instantiated when
``models/model.pt`` exists, the first ``network_data_format`` input and output as image and prediction keys,
non-background ``channel_def`` entries as labels, the task type from the folder name, ``preprocessing`` /
``inferer`` / ``postprocessing`` (with ``SaveImaged`` filtered out) run around the network.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bundle_copies import copy_bundle, write_random_model
from monai.bundle import ConfigParser
from monai.transforms import Compose, LoadImaged, SaveImaged

from medunlearn_monai.data.mrbrains18 import MODALITIES, find_mrbrains18_subjects
from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18
from medunlearn_monai.workflows import BUNDLES_DIR

SEGMENTATION = "mrbrains18_med3d_segmentation"
CLASSIFICATION = ["tissuemnist_resnet_classification", "chexpert_resnet_classification"]
SPACING = [4.0, 4.0, 6.0]


def metadata(name: str) -> dict:
    return json.loads((BUNDLES_DIR / name / "configs" / "metadata.json").read_text())


def transforms(parser: ConfigParser, key: str) -> list:
    composed = parser.get_parsed_content(key, instantiate=True)
    return list(composed.transforms) if isinstance(composed, Compose) else composed


def test_supported_apps_name_monai_label_and_deploy_for_the_segmenter_only():
    assert metadata(SEGMENTATION)["supported_apps"] == {"monai-label": "0.8.5", "monai-deploy-app-sdk": "4.0.0"}
    # MONAI Label appends a Restored(pred -> image) step and keeps SaveClassificationd's CSV writer: not supported.
    for name in CLASSIFICATION:
        assert "monai-label" not in metadata(name)["supported_apps"]


def test_segmentation_bundle_infers_as_a_monai_label_bundle_app(tmp_path):
    bundle = copy_bundle(SEGMENTATION, tmp_path, depth=10, pixdim=SPACING, roi_size=[32, 32, 16])
    write_random_model(bundle, bundle / "models" / "model.pt")
    write_synthetic_mrbrains18(tmp_path / "scans", n_subjects=1, spacing=tuple(SPACING), subject_ids=["case-a"])

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.config.update({"bundle_root": str(bundle)})
    network = parser.get_parsed_content("network_def", instantiate=True)
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    network.eval()

    data_format = metadata(SEGMENTATION)["network_data_format"]
    image_key, image_format = next(iter(data_format["inputs"].items()))
    pred_key, pred_format = next(iter(data_format["outputs"].items()))
    labels = {value.lower(): int(key) for key, value in pred_format["channel_def"].items() if value != "background"}
    assert (image_key, pred_key, labels) == ("image", "pred", {"brain tissue": 1})
    assert len(image_format["spatial_shape"]) == 3 and "segmentation" in bundle.name

    pre = transforms(parser, "preprocessing")
    post = [step for step in transforms(parser, "postprocessing") if not isinstance(step, SaveImaged)]
    assert isinstance(pre[0], LoadImaged)  # MONAI Label swaps in its LoadImageTensord here
    inferer = parser.get_parsed_content("inferer", instantiate=True)

    (subject,) = find_mrbrains18_subjects(tmp_path / "scans", MODALITIES, require_label=False)
    data = Compose(pre)({image_key: subject["image"]})
    with torch.no_grad():
        data[pred_key] = inferer(data[image_key][None], network)[0]
    data = Compose(post)(data)

    scan_shape = np.asarray(data[image_key].meta["spatial_shape"]).tolist()
    prediction = data[pred_key]
    assert list(prediction.shape) == [1, *scan_shape]  # inverted to the scan's grid, as Restored expects
    assert set(torch.unique(prediction).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("key", ["bundle_root", "device", "network_def", "preprocessing", "inferer", "postprocessing"])
def test_inference_config_defines_every_key_monai_label_reads(key):
    assert key in json.loads((BUNDLES_DIR / SEGMENTATION / "configs" / "inference.json").read_text())
