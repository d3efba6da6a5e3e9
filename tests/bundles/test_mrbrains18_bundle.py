"""End to end through monai.bundle: train -> exact retrain -> every strategy -> evaluate, on tiny synthetic subjects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pytest
import torch
from retraining_reference import assert_scored_against_retraining

from medunlearn_monai.cli import main
from medunlearn_monai.data.mrbrains18 import MRBrainS18FormatError, class_names
from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18
from medunlearn_monai.forget import ForgetRequestError, hash_subject
from medunlearn_monai.networks.med3d import Med3DSegmenter
from medunlearn_monai.records import file_sha256, read_json
from medunlearn_monai.workflows import BUNDLES_DIR, run_workflow, strategies

BUNDLE = "mrbrains18_med3d_segmentation"
STRATEGIES = strategies(BUNDLE)
SUBJECTS = [f"mrb-subject-{letter}" for letter in "abcdefg"]
FORGOTTEN = "mrb-subject-c"
TEST_SUBJECT = "mrb-subject-g"
SPACING = [4.0, 4.0, 6.0]
SMALL = {
    "depth": 10,
    "pixdim": SPACING,
    "roi_size": [32, 32, 16],
    "test_subjects": [TEST_SUBJECT],
    "experiment_name": "e2e-seg",
}
TRAIN_EPOCHS = 24
UNLEARN_EPOCHS = 4
# At its shipped forget_weight 1, NegGrad+ (the paper's Max Loss) moves forget Dice on these alike subjects by -0.006
# to +0.003 (seeds 0 and 1, 1 and 2 threads): noise whose sign flips. At weight 4 it lowers it by 0.52 to 0.77 in the
# same four runs.
STRATEGY_OVERRIDES = {"neggrad_plus": {"forget_weight": 4.0}}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every workflow once; returns the working folder, the models folder and the environment."""
    work = tmp_path_factory.mktemp("mrbrains18")
    write_synthetic_mrbrains18(work / "data", n_subjects=len(SUBJECTS), spacing=SPACING, subject_ids=SUBJECTS)
    (work / "request.txt").write_text(FORGOTTEN + "\n")
    environment = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MEDUNLEARN_SALT": "e2e-salt"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for key, value in environment.items():
            patch.setenv(key, value)
        common = {"dataset_dir": str(work / "data"), "model_dir": str(work / "models"), **SMALL}
        request = {"forget_request_file": str(work / "request.txt")}
        run_workflow(BUNDLE, "train", **common, max_epochs=TRAIN_EPOCHS, val_interval=TRAIN_EPOCHS)
        run_workflow(BUNDLE, "train", **common, **request, max_epochs=TRAIN_EPOCHS, val_interval=TRAIN_EPOCHS)
        for name in STRATEGIES:
            run_workflow(BUNDLE, "unlearn", name, **common, **request, unlearn_epochs=UNLEARN_EPOCHS,
                         **STRATEGY_OVERRIDES.get(name, {}))  # fmt: skip
        models = work / "models"
        for model in ["model", "retrained", *(f"unlearned_{name}" for name in STRATEGIES)]:
            run_workflow(BUNDLE, "evaluate", **common, **request, model_path=str(models / f"{model}.pt"))
    return work, models, environment


def evaluation(models: Path, model: str) -> dict:
    return read_json(models / f"{model}.eval.json")


def test_original_model_segments_brain_tissue(pipeline):
    _, models, _ = pipeline
    original = evaluation(models, "model")
    assert original["test_dice"] > 0.8 and original["retain_dice"] > 0.8
    assert 0 <= original["test_mae"] < 0.2


def test_every_unlearned_model_is_scored_like_the_paper_and_against_retraining(pipeline):
    _, models, _ = pipeline
    for name in STRATEGIES:
        metrics = evaluation(models, f"unlearned_{name}")
        for key in ("retain_dice", "forget_dice", "test_dice", "retain_mae", "forget_mae", "test_mae"):
            assert 0 <= metrics[key] <= 1, (name, key)  # fractions, not percentages: the report scales them once
        original = evaluation(models, "model")
        expected_decrease = 100 * (original["forget_dice"] - metrics["forget_dice"]) / original["forget_dice"]
        assert metrics["forget_dice_decrease_pct"] == pytest.approx(expected_decrease)
        assert metrics["retain_dice_kept_pct"] == pytest.approx(100 * metrics["retain_dice"] / original["retain_dice"])
    assert_scored_against_retraining(models, STRATEGIES, ("forget_dice", "retain_dice", "test_dice"))


# benchmarks/results/outcome_spread_mrbrains18.md: in this setting at seeds 0 and 1 (data and model) and 1 and 2 torch
# threads these strategies lowered forget Dice by at least 7.5 points in every run (LearnNoise 16.1-29.6, LearnOthers
# 7.5-35.9, SalUn 63.5-94.0, Random Encoder 62.0-93.3; NegGrad+ below). Noisy Label (`fresh`) moved it by only 1.6-11.2
# on these alike subjects; its outcome is asserted on the distinct subject in test_mrbrains18_noise_modes.py. FT,
# GA, l1-sparse, SCRUB and Fix Decoder at 4 epochs moved it by -1.7 to +3.3 and SSD by 4.7-19.6 (not several spreads
# above 0), so their effect is asserted by mechanism in tests/strategies/ (and Fix Decoder's below).
@pytest.mark.parametrize("strategy", ["learn_noise", "learn_others", "salun", "random_encoder"])
def test_forgetting_strategies_lower_forget_dice(pipeline, strategy):
    _, models, _ = pipeline
    unlearned, original = evaluation(models, f"unlearned_{strategy}"), evaluation(models, "model")
    assert unlearned["forget_dice"] < original["forget_dice"] - 0.03


def test_neggrad_plus_lowers_forget_dice_by_far_more_than_its_noise(pipeline):
    _, models, _ = pipeline
    original, unlearned = evaluation(models, "model"), evaluation(models, "unlearned_neggrad_plus")
    assert unlearned["forget_dice"] < original["forget_dice"] - 0.2  # measured drops 0.60-0.76 (spread file above)


def test_fix_decoder_keeps_the_decoder_and_random_encoder_resets_the_encoder(pipeline):
    _, models, _ = pipeline
    original = torch.load(models / "model.pt", weights_only=True)
    fixed = torch.load(models / "unlearned_fix_decoder.pt", weights_only=True)
    reset = torch.load(models / "unlearned_random_encoder.pt", weights_only=True)
    assert all(torch.equal(original[key], fixed[key]) for key in original if key.startswith("conv_seg"))
    assert not all(torch.equal(original[key], fixed[key]) for key in original if key.startswith("layer"))
    assert not torch.equal(original["conv1.weight"], reset["conv1.weight"])


def test_per_subject_table_hashes_subjects(pipeline):
    _, models, _ = pipeline
    rows = read_json(models / "unlearned_noisy_label.subjects.json")["subjects"]
    assert [row["split"] for row in rows].count("retain") == len(SUBJECTS) - 2
    forget_row = next(row for row in rows if row["split"] == "forget")
    assert forget_row["subject_sha256"] == hash_subject(FORGOTTEN, b"e2e-salt")
    assert forget_row["dice"] == pytest.approx(evaluation(models, "unlearned_noisy_label")["forget_dice"])


def test_original_model_file_is_never_rewritten(pipeline):
    _, models, _ = pipeline
    record = read_json(models / "model.json")
    assert file_sha256(models / "model.pt") == record["model_sha256"]
    for name in STRATEGIES:
        assert read_json(models / f"unlearned_{name}.json")["source_model_sha256"] == record["model_sha256"]


def test_mlflow_runs_finished_with_dice_metrics_and_overlays(pipeline):
    _, _, environment = pipeline
    client = mlflow.MlflowClient(environment["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("e2e-seg").experiment_id])
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert len(runs) == 2 + len(STRATEGIES) + (2 + len(STRATEGIES))
    retrain = next(run for run in runs if run.data.params["workflow"] == "retrain")
    assert retrain.data.params["forget_subjects"] == "1" and retrain.data.params["depth"] == "10"
    assert {"train_loss", "val_dice", "val_mae", "unlearn_seconds"} <= retrain.data.metrics.keys()
    evaluate = next(
        run
        for run in runs
        if run.data.params["workflow"] == "evaluate" and run.data.params["strategy"] == "neggrad_plus"
    )
    assert {"forget_dice_decrease_pct", "retain_dice_kept_pct", "gap_to_retrain"} <= evaluate.data.metrics.keys()
    artifacts = {entry.path for entry in client.list_artifacts(evaluate.info.run_id, "plots")}
    assert "plots/overlay_by_split.png" in artifacts


def test_no_forgotten_subject_id_is_stored_outside_the_data(pipeline):
    work, _, _ = pipeline
    scanned = 0
    for path in work.rglob("*"):
        if not path.is_file() or path.name == "request.txt" or "data" in path.relative_to(work).parts[:1]:
            continue
        scanned += 1
        assert FORGOTTEN.encode() not in path.read_bytes(), path
    assert scanned > 30


def test_metadata_names_the_output_channels_of_the_default_label_merge():
    metadata = json.loads((BUNDLES_DIR / BUNDLE / "configs" / "metadata.json").read_text())
    output = metadata["network_data_format"]["outputs"]["pred"]
    assert list(output["channel_def"].values()) == class_names("binary")
    assert output["num_channels"] == len(class_names("binary"))
    assert metadata["network_data_format"]["inputs"]["image"]["num_channels"] == 3


def test_inference_writes_a_mask_in_the_scan_geometry_that_matches_evaluation(pipeline, tmp_path):
    work, models, _ = pipeline
    scans = tmp_path / "scans" / "training"
    shutil.copytree(work / "data" / "training" / TEST_SUBJECT / "pre", scans / "new-case" / "pre")
    run_workflow(
        BUNDLE, "inference", dataset_dir=str(tmp_path / "scans"), model_dir=str(models),
        output_dir=str(tmp_path / "out"), depth=10, pixdim=SPACING, roi_size=[32, 32, 16],
    )  # fmt: skip
    (written,) = list((tmp_path / "out").rglob("*_seg.nii.gz"))
    truth = nib.load(work / "data" / "training" / TEST_SUBJECT / "segm.nii.gz")
    mask = nib.load(written)
    predicted = np.asarray(mask.dataobj).squeeze() > 0
    assert predicted.shape == truth.shape and np.allclose(mask.affine, truth.affine)
    reference = np.asarray(truth.dataobj) > 0
    dice = 2 * (predicted & reference).sum() / (predicted.sum() + reference.sum())
    assert dice == pytest.approx(evaluation(models, "model")["test_dice"], abs=0.05)


def test_training_starts_from_a_medicalnet_checkpoint(pipeline, tmp_path, capsys):
    work, _, _ = pipeline
    encoder = Med3DSegmenter(depth=10, in_channels=1).state_dict()
    checkpoint = {f"module.{key}": value for key, value in encoder.items() if not key.startswith("conv_seg")}
    torch.save({"state_dict": checkpoint}, tmp_path / "resnet_10.pth")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        run_workflow(
            BUNDLE, "train", dataset_dir=str(work / "data"), model_dir=str(tmp_path / "models"), **SMALL,
            pretrained_checkpoint=str(tmp_path / "resnet_10.pth"), max_epochs=1, learning_rate=0.0,
        )  # fmt: skip
    trained = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert torch.allclose(trained["conv1.weight"], encoder["conv1.weight"].repeat(1, 3, 1, 1, 1) / 3)
    assert torch.equal(trained["layer1.0.conv1.weight"], encoder["layer1.0.conv1.weight"])
    assert read_json(tmp_path / "models" / "model.json")["pretrained"] is True
    assert "adapted: conv1.weight" in capsys.readouterr().out  # the bundle's logging.conf prints to stdout


def _broken_copy(work: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(work / "data", data)
    return data


@pytest.mark.parametrize(
    ("defect", "message"),
    [
        ("missing_modality", "reg_IR.nii.gz (or IR.nii.gz): IR image not found"),
        ("label_shape", "segm.nii.gz"),
        ("unreadable", "reg_T1.nii.gz"),
    ],
)
def test_bad_subject_data_fails_before_anything_is_written(pipeline, tmp_path, defect, message):
    work, _, environment = pipeline
    data = _broken_copy(work, tmp_path)
    subject = data / "training" / "mrb-subject-b"
    if defect == "missing_modality":
        (subject / "pre" / "reg_IR.nii.gz").unlink()
    elif defect == "label_shape":
        nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), subject / "segm.nii.gz")
    else:
        content = (subject / "pre" / "reg_T1.nii.gz").read_bytes()
        (subject / "pre" / "reg_T1.nii.gz").write_bytes(content[: len(content) // 2])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        with pytest.raises(Exception) as error:
            run_workflow(BUNDLE, "train", dataset_dir=str(data), model_dir=str(tmp_path / "models"), **SMALL)
    chain, cause = [], error.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    (reason,) = [reason for reason in chain if isinstance(reason, MRBrainS18FormatError)]
    assert message in str(reason) and str(subject) in str(reason)
    assert not (tmp_path / "models").exists()
    assert mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("e2e-seg") is None


def test_cli_reports_a_missing_modality_in_one_line_naming_the_file(pipeline, tmp_path, capsys):
    work, _, _ = pipeline
    data = _broken_copy(work, tmp_path)
    (data / "training" / "mrb-subject-d" / "pre" / "FLAIR.nii.gz").unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        code = main(["run", BUNDLE, "train", "--dataset_dir", str(data), "--model_dir", str(tmp_path / "models"),
                     "--depth", "10", "--test_subjects", f"['{TEST_SUBJECT}']"])  # fmt: skip
    assert code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    expected = f"{data / 'training' / 'mrb-subject-d' / 'pre' / 'FLAIR.nii.gz'}: FLAIR image not found"
    assert last_line == f"medunlearn: error: MRBrainS18FormatError: {expected}"
    assert not (tmp_path / "models").exists()


def test_a_held_out_test_subject_cannot_be_forgotten(pipeline, tmp_path):
    work, models, _ = pipeline
    (tmp_path / "request.txt").write_text(TEST_SUBJECT + "\n")
    before = sorted(path.name for path in models.iterdir())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        with pytest.raises(Exception) as error:
            run_workflow(BUNDLE, "unlearn", "noisy_label", dataset_dir=str(work / "data"), model_dir=str(models),
                         forget_request_file=str(tmp_path / "request.txt"), **SMALL)  # fmt: skip
    chain, cause = [], error.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    assert any(isinstance(reason, ForgetRequestError) and "entries #1" in str(reason) for reason in chain)
    assert sorted(path.name for path in models.iterdir()) == before
