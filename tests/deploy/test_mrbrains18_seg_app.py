"""The MONAI Deploy app segments NIfTI subjects exactly like the bundle's own inference workflow.

The app runs under the Deploy SDK when it is installed (``pip install -e .[deploy]``; CI does so in a venv of its
own, see deploy/README.md). Without the SDK, the same chain is checked from the exported TorchScript file: its
embedded ``inference.json`` is parsed and applied the way the SDK's ``MonaiBundleInferenceOperator`` applies it
(LoadImage*/SaveImage* dropped, the subject fed in as a MetaTensor, the label map squeezed to ``(D, H, W)``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_copies import copy_bundle, export_torchscript, load_app_module, write_random_model
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18
from medunlearn_monai.workflows import PACKAGE_ROOT, run_workflow

APP_DIR = PACKAGE_ROOT / "deploy" / "mrbrains18_seg_app"
SEGMENTATION = "mrbrains18_med3d_segmentation"
SPACING = [4.0, 4.0, 6.0]
SMALL = {"depth": 10, "pixdim": SPACING, "roi_size": [32, 32, 16]}
DROPPED_BY_DEPLOY = ("LoadImage", "SaveImage")


def load_nifti_io():
    """The app's I/O module, imported from its folder as the app itself imports it."""
    return load_app_module(APP_DIR / "nifti_io.py")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small segmenter exported to TorchScript, one synthetic subject, and the bundle workflow's own label map."""
    work = tmp_path_factory.mktemp("deploy")
    bundle = copy_bundle(SEGMENTATION, work, **SMALL)
    write_random_model(bundle, bundle / "models" / "model.pt")
    export_torchscript(bundle)
    write_synthetic_mrbrains18(work / "scans", n_subjects=1, spacing=tuple(SPACING), subject_ids=["case-a"])
    run_workflow(bundle, "inference", dataset_dir=str(work / "scans"), output_dir=str(work / "reference"))
    (reference,) = (work / "reference").rglob("*_seg.nii.gz")
    return work, bundle / "models" / "model.ts", reference


def assert_same_segmentation(written: Path, reference: Path) -> None:
    ours, theirs = nib.load(written), nib.load(reference)
    assert np.allclose(ours.affine, theirs.affine)
    labels, expected = np.asarray(ours.dataobj), np.asarray(theirs.dataobj).squeeze()
    assert labels.shape == expected.shape
    assert np.array_equal(labels, expected)
    assert set(np.unique(expected)) == {0, 1}  # a label map, not a constant volume


def test_embedded_inference_config_segments_like_the_bundle_workflow(exported, tmp_path):
    work, model_ts, reference = exported
    nifti_io = load_nifti_io()
    extra_files = {"inference.json": ""}
    network = torch.jit.load(str(model_ts), _extra_files=extra_files).eval()
    parser = ConfigParser(json.loads(extra_files["inference.json"]))
    parser["bundle_root"] = str(work)

    def compose(key: str) -> Compose:
        kept = [
            t for t in parser.get_parsed_content(key).transforms if not type(t).__name__.startswith(DROPPED_BY_DEPLOY)
        ]
        return Compose(kept)

    (subject,) = nifti_io.find_subjects(work / "scans")
    array, metadata = nifti_io.load_subject(subject)
    inputs = compose("preprocessing")({"image": MetaTensor(torch.as_tensor(array), meta=metadata)})
    with torch.no_grad():
        prediction = parser.get_parsed_content("inferer")(inputs["image"][None], network)[0]
    outputs = compose("postprocessing")({"pred": prediction, **inputs})
    labels_dhw = np.swapaxes(outputs["pred"].numpy().squeeze(0), 0, 2).astype(np.uint8)
    written = nifti_io.write_segmentation(labels_dhw, dict(inputs["image"].meta), tmp_path / "out")
    assert written.name == "case-a_seg.nii.gz"
    assert_same_segmentation(written, reference)


def test_writer_refuses_metadata_that_did_not_come_from_the_loader(tmp_path):
    with pytest.raises(KeyError, match="original_affine"):
        load_nifti_io().write_segmentation(np.zeros((2, 3, 4), np.uint8), {"subject": "x"}, tmp_path)


def test_app_runs_under_the_monai_deploy_sdk(exported, tmp_path):
    pytest.importorskip("monai.deploy.operators.monai_bundle_inference_operator", reason="pip install -e .[deploy]")
    work, model_ts, reference = exported
    result = subprocess.run(
        [sys.executable, str(APP_DIR), "-i", str(work / "scans"), "-o", str(tmp_path / "out"), "-m", str(model_ts)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_segmentation(tmp_path / "out" / "case-a_seg.nii.gz", reference)
