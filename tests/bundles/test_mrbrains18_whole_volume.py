"""The MRBrainS18 bundle in the whole-volume regime (``input_regime: whole``, MedicalNet's pipeline): train, unlearn,
evaluate and infer on tiny synthetic subjects, each cropped to its foreground and resized to ``whole_size``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import nibabel as nib
import numpy as np
import pytest
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18
from medunlearn_monai.networks.med3d import Med3DSegmenter
from medunlearn_monai.records import read_json
from medunlearn_monai.workflows import config_value, run_workflow

BUNDLE = "mrbrains18_med3d_segmentation"
SUBJECTS = ["mrb-whole-a", "mrb-whole-b", "mrb-whole-c", "mrb-whole-d"]
FORGOTTEN, TEST_SUBJECT = SUBJECTS[1], SUBJECTS[-1]
SPACING = [4.0, 4.0, 6.0]  # as in test_mrbrains18_bundle.py
WHOLE_SIZE = [32, 40, 16]  # unlike the cropped subjects' shape and different per axis, so a swapped axis shows
WHOLE = {"depth": 10, "pixdim": SPACING, "input_regime": "whole", "whole_size": WHOLE_SIZE}
SPLIT = {"test_subjects": [TEST_SUBJECT], "experiment_name": "e2e-whole"}
WORKFLOWS = ("train", "unlearn", "evaluate", "inference")


@contextmanager
def network_inputs() -> Iterator[list[tuple[int, ...]]]:
    """The shape of every batch a Med3D segmenter receives while the block runs."""
    shapes: list[tuple[int, ...]] = []

    def keep(module: nn.Module, args: tuple) -> None:
        if isinstance(module, Med3DSegmenter):
            shapes.append(tuple(args[0].shape))

    handle = register_module_forward_pre_hook(keep)
    try:
        yield shapes
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Train (2 epochs, validated once), unlearn with FT (1 epoch), evaluate both models and infer on a new scan;
    returns the working folder, the network's input shapes per workflow and the MLflow store."""
    work = tmp_path_factory.mktemp("mrbrains18_whole")
    write_synthetic_mrbrains18(work / "data", n_subjects=len(SUBJECTS), spacing=SPACING, subject_ids=SUBJECTS)
    shutil.copytree(work / "data" / "training" / TEST_SUBJECT / "pre", work / "scans" / "training" / "new-case" / "pre")
    (work / "request.txt").write_text(FORGOTTEN + "\n")
    store = f"sqlite:///{work / 'mlflow.db'}"
    models = work / "models"
    common = {"dataset_dir": str(work / "data"), "model_dir": str(models), **WHOLE, **SPLIT}
    request = {"forget_request_file": str(work / "request.txt")}
    shapes = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("MLFLOW_TRACKING_URI", store)
        patch.setenv("MEDUNLEARN_SALT", "e2e-salt")
        with network_inputs() as shapes["train"]:
            run_workflow(BUNDLE, "train", **common, max_epochs=2, val_interval=2)
        with network_inputs() as shapes["unlearn"]:
            run_workflow(BUNDLE, "unlearn", "ft", **common, **request, unlearn_epochs=1)
        with network_inputs() as shapes["evaluate"]:
            for model in ("model", "unlearned_ft"):
                run_workflow(BUNDLE, "evaluate", **common, **request, model_path=str(models / f"{model}.pt"))
        with network_inputs() as shapes["inference"]:
            run_workflow(
                BUNDLE, "inference", dataset_dir=str(work / "scans"), model_dir=str(models),
                output_dir=str(work / "out"), **WHOLE,
            )  # fmt: skip
    return work, shapes, store


def test_every_workflow_feeds_the_network_one_volume_of_whole_size(pipeline):
    _, shapes, _ = pipeline
    for workflow in WORKFLOWS:
        assert set(shapes[workflow]) == {(1, 3, *WHOLE_SIZE)}, workflow
    assert len(shapes["train"]) == 2 * (len(SUBJECTS) - 1) + 1  # 3 training subjects a step each, then validation
    assert len(shapes["unlearn"]) == len(SUBJECTS) - 2  # FT: the retained subjects only
    assert len(shapes["evaluate"]) == 2 * len(SUBJECTS)


def test_evaluation_scores_retain_forget_and_test_subjects(pipeline):
    work, _, _ = pipeline
    for model in ("model", "unlearned_ft"):
        metrics = read_json(work / "models" / f"{model}.eval.json")
        for split in ("retain", "forget", "test"):
            # A range on purpose: the whole regime scores on the resized grid through its own post-processing, and
            # the report scales Dice and MAE as fractions; what the scores say is tested in test_mrbrains18_bundle.py.
            assert 0 <= metrics[f"{split}_dice"] <= 1 and 0 <= metrics[f"{split}_mae"] <= 1, (model, split)
        rows = read_json(work / "models" / f"{model}.subjects.json")["subjects"]
        assert sorted(row["split"] for row in rows) == ["forget", "retain", "retain", "test"]
    assert "forget_dice_decrease_pct" in read_json(work / "models" / "unlearned_ft.eval.json")


def test_inference_writes_the_mask_in_the_scan_geometry(pipeline):
    work, _, _ = pipeline
    (written,) = list((work / "out").rglob("*_seg.nii.gz"))
    scan = nib.load(work / "scans" / "training" / "new-case" / "pre" / "reg_T1.nii.gz")
    mask = nib.load(written)
    predicted = np.asarray(mask.dataobj).squeeze()
    assert predicted.shape == scan.shape and np.allclose(mask.affine, scan.affine)
    assert set(np.unique(predicted)) <= {0, 1}


def test_mlflow_and_the_model_records_name_the_regime_and_the_size(pipeline):
    work, _, store = pipeline
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("e2e-whole").experiment_id])
    assert sorted(run.data.params["workflow"] for run in runs) == ["evaluate", "evaluate", "train", "unlearn"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["input_regime"] == "whole" and run.data.params["whole_size"] == str(WHOLE_SIZE)
    for model in ("model", "unlearned_ft"):
        record = read_json(work / "models" / f"{model}.json")
        assert record["input_regime"] == "whole" and record["whole_size"] == WHOLE_SIZE


def test_patch_regime_is_the_default_and_logs_no_whole_size():
    assert config_value(BUNDLE, "run_params#input_regime") == "patch"
    assert config_value(BUNDLE, "run_params#whole_size") is None
    assert config_value(BUNDLE, "batch_size") == 2
    names = [type(step).__name__ for step in config_value(BUNDLE, "preprocessing").transforms]
    assert names[-3:] == ["CropForegroundd", "SpatialPadd", "EnsureTyped"] and "Resized" not in names
    assert [type(step).__name__ for step in config_value(BUNDLE, "augmentation")] == ["RandCropByPosNegLabeld"]
    assert type(config_value(BUNDLE, "validate#inferer").inferer).__name__ == "SlidingWindowInferer"
    inference = [type(step).__name__ for step in config_value(BUNDLE, "preprocessing", "inference").transforms]
    assert "CropForegroundd" not in inference and "Resized" not in inference
    assert type(config_value(BUNDLE, "inferer", "inference")).__name__ == "SlidingWindowInferer"


@pytest.mark.parametrize("workflow", ["train", "inference"])
def test_an_unknown_regime_is_refused_with_the_choices(workflow):
    with pytest.raises(Exception) as error:
        config_value(BUNDLE, "preprocessing", workflow, input_regime="slices")
    chain, cause = [], error.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    message = "Unknown input_regime 'slices'; expected one of ('patch', 'whole')"
    assert any(isinstance(reason, ValueError) and str(reason) == message for reason in chain)
