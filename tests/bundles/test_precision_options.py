"""The bundles' ``amp`` (bfloat16 autocast) and ``channels_last`` options, end to end on CPU through monai.bundle."""

from __future__ import annotations

import mlflow
import torch

from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18, write_synthetic_tissuemnist
from medunlearn_monai.records import read_json
from medunlearn_monai.tracking import tracking_uri
from medunlearn_monai.workflows import run_workflow


def _tissuemnist(tmp_path, name: str, **options) -> dict[str, torch.Tensor]:
    write_synthetic_tissuemnist(tmp_path / "data" / "tissuemnist.npz", n_train=64, n_val=32, n_test=32)
    models = tmp_path / name
    settings = {"dataset_dir": str(tmp_path / "data"), "model_dir": str(models), "batch_size": 32, "max_epochs": 1}
    run_workflow("tissuemnist_resnet_classification", "train", experiment_name="amp", **settings, **options)
    return torch.load(models / "model.pt", weights_only=True)


def test_a_tissuemnist_training_with_amp_and_channels_last_on_cpu_writes_a_float32_model(tmp_path):
    reference = _tissuemnist(tmp_path, "fp32")
    mixed = _tissuemnist(tmp_path, "bf16", amp=True, channels_last="true")
    assert mixed.keys() == reference.keys()
    assert all(mixed[name].dtype == reference[name].dtype for name in mixed)  # weights stay float32
    assert not all(torch.equal(mixed[name], reference[name]) for name in mixed)  # but bfloat16 products moved them
    assert read_json(tmp_path / "bf16" / "model.json")["amp"] is True
    client = mlflow.MlflowClient(tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("amp").experiment_id])
    assert sorted((run.data.params["amp"], run.data.params["channels_last"]) for run in runs) == [
        ("false", "false"),
        ("true", "true"),
    ]
    assert all(run.info.status == "FINISHED" and "val_acc" in run.data.metrics for run in runs)


def test_a_segmentation_training_with_amp_validates_with_the_sliding_window_under_autocast(tmp_path):
    subjects = ["s1", "s2", "s3"]
    write_synthetic_mrbrains18(tmp_path / "data", n_subjects=3, spacing=(4.0, 4.0, 6.0), subject_ids=subjects)
    run_workflow(
        "mrbrains18_med3d_segmentation",
        "train",
        dataset_dir=str(tmp_path / "data"),
        model_dir=str(tmp_path / "models"),
        depth=10,
        pixdim=[4.0, 4.0, 6.0],
        roi_size=[32, 32, 16],
        test_subjects=["s3"],
        max_epochs=1,
        val_interval=1,
        amp=True,
        experiment_name="amp-seg",
    )
    assert read_json(tmp_path / "models" / "model.json")["amp"] is True
    client = mlflow.MlflowClient(tracking_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("amp-seg").experiment_id])
    # one epoch: the Dice value claims nothing about quality; that the autocast validation ran and logged it does
    assert run.info.status == "FINISHED" and 0.0 <= run.data.metrics["val_dice"] <= 1.0
