"""No forgotten subject ID leaves the request file: the three bundles' workflows run with known IDs in their
requests through the ``medunlearn`` CLI in a fresh process, and everything written (MLflow store and artifacts,
models, records, evaluations, certificates, logs) and printed (stdout, stderr) is scanned for the IDs in plaintext.
Every run in that store names its data as MLflow datasets by salted digest (data lineage)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from medunlearn_monai.data.chexpert import load_chexpert_items, patient_split
from medunlearn_monai.data.medmnist import load_medmnist_items
from medunlearn_monai.data.synthetic import (
    write_synthetic_chexpert,
    write_synthetic_mrbrains18,
    write_synthetic_tissuemnist,
)
from medunlearn_monai.forget import hash_subject
from medunlearn_monai.tracking import run_datasets

SALT = "no-identifiers-deployment-salt"
MRB_SUBJECTS = ["mrb-secret-anna", "mrb-secret-bert", "mrb-secret-carl"]
# The commands run by one interpreter, as ``medunlearn`` would run each: cli.main turns each into an exit code.
DRIVER = """
import json, sys
from medunlearn_monai.cli import main
sys.exit(max(main(argv) for argv in json.loads(sys.argv[1])))
"""


def _tissuemnist(work: Path) -> tuple[list[list[str]], list[str]]:
    data = write_synthetic_tissuemnist(work / "tissuemnist" / "data" / "tissuemnist.npz", 64, 16, 16)
    forgotten = [item["subject"] for item in load_medmnist_items(data, "train")[5:13]]
    request = work / "requests" / "tissuemnist.txt"
    request.write_text("\n".join(forgotten) + "\n")
    images = work / "tissuemnist" / "new_images"
    images.mkdir()
    for index, item in enumerate(load_medmnist_items(data, "test")[:3]):
        Image.fromarray(item["image"][0]).save(images / f"case_{index}.png")
    models = work / "tissuemnist" / "models"
    common = ["--dataset_dir", str(data.parent), "--model_dir", str(models), "--batch_size", "16", "--max_epochs", "1",
              "--unlearn_epochs", "1"]  # fmt: skip
    return _workflows("tissuemnist_resnet_classification", "rl", common, request, models) + [
        ["run", "tissuemnist_resnet_classification", "inference", "--dataset_dir", str(images),
         "--model_dir", str(models), "--output_dir", str(work / "tissuemnist" / "predictions")],
    ], forgotten  # fmt: skip


def _chexpert(work: Path) -> tuple[list[list[str]], list[str]]:
    data = write_synthetic_chexpert(work / "chexpert" / "data", n_patients=12, size=32, n_valid_patients=2)
    train, _, _ = patient_split(load_chexpert_items(data))  # the bundle's default fractions and seed
    forgotten = sorted({item["subject"] for item in train})[1:3]
    request = work / "requests" / "chexpert.csv"
    with open(request, "w", newline="") as handle:
        csv.writer(handle).writerows([["patient_id"], *([subject] for subject in forgotten)])
    models = work / "chexpert" / "models"
    common = ["--dataset_dir", str(data), "--model_dir", str(models), "--image_size", "32", "--batch_size", "8",
              "--max_epochs", "1", "--unlearn_epochs", "1"]  # fmt: skip
    return _workflows("chexpert_resnet_classification", "rl", common, request, models), forgotten


def _mrbrains18(work: Path) -> tuple[list[list[str]], list[str]]:
    data = work / "mrbrains18" / "data"
    write_synthetic_mrbrains18(data, n_subjects=len(MRB_SUBJECTS), spacing=(4.0, 4.0, 6.0), subject_ids=MRB_SUBJECTS)
    forgotten = [MRB_SUBJECTS[1]]
    request = work / "requests" / "mrbrains18.json"
    request.write_text(json.dumps({"subjects": forgotten}))
    models = work / "mrbrains18" / "models"
    common = ["--dataset_dir", str(data), "--model_dir", str(models), "--depth", "10", "--max_epochs", "1",
              "--unlearn_epochs", "1", "--pixdim", "[4.0, 4.0, 6.0]", "--roi_size", "[32, 32, 16]",
              "--test_subjects", f"['{MRB_SUBJECTS[-1]}']"]  # fmt: skip
    return _workflows("mrbrains18_med3d_segmentation", "noisy_label", common, request, models), forgotten


def _workflows(bundle: str, strategy: str, common: list[str], request: Path, models: Path) -> list[list[str]]:
    """Train, retrain exactly, unlearn with ``strategy`` and evaluate the unlearned model against the retrained one."""
    forget = ["--forget_request_file", str(request), "--experiment_name", f"leak-{bundle}"]
    unlearned = models / f"unlearned_{strategy}.pt"
    return [
        ["run", bundle, "train", *common, "--experiment_name", f"leak-{bundle}"],
        ["run", bundle, "train", *common, *forget],
        ["run", bundle, "unlearn", "--strategy", strategy, *common, *forget],
        ["run", bundle, "evaluate", *common, *forget, "--model_path", str(unlearned)],
    ]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, list[str], list[Path]]:
    """Run every bundle's workflows in one subprocess; returns the work folder, the forgotten IDs and the inputs."""
    work = tmp_path_factory.mktemp("no_identifiers")
    (work / "requests").mkdir()
    commands, forgotten = [], []
    for make in (_tissuemnist, _chexpert, _mrbrains18):
        bundle_commands, bundle_forgotten = make(work)
        commands += bundle_commands
        forgotten += bundle_forgotten
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MEDUNLEARN_SALT": SALT}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        cwd=work, env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (work / "console.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    inputs = [work / "requests", *(work / bundle / "data" for bundle in ("tissuemnist", "chexpert", "mrbrains18"))]
    return work, forgotten, inputs


def _written_files(work: Path, inputs: list[Path]) -> list[Path]:
    return [
        path
        for path in sorted(work.rglob("*"))
        if path.is_file() and not any(path.is_relative_to(folder) for folder in inputs)
    ]


def test_every_workflow_of_every_bundle_wrote_its_outputs(pipeline):
    work, _, _ = pipeline
    for bundle, strategy in (("tissuemnist", "rl"), ("chexpert", "rl"), ("mrbrains18", "noisy_label")):
        models = work / bundle / "models"
        expected = ["model.pt", "retrained.pt", f"unlearned_{strategy}.pt", f"unlearned_{strategy}.eval.json"]
        assert all((models / name).is_file() for name in expected), sorted(path.name for path in models.iterdir())
    assert (work / "tissuemnist" / "predictions" / "predictions.csv").is_file()
    assert "Engine run finished" in (work / "console.log").read_text()


def test_no_forgotten_id_is_written_or_printed_anywhere(pipeline):
    work, forgotten, inputs = pipeline
    written = _written_files(work, inputs)
    leaks = {
        str(path.relative_to(work)): found
        for path in written
        if (found := [subject for subject in forgotten if subject.encode() in path.read_bytes()])
    }
    assert not leaks
    names = {path.name for path in written}
    assert {"mlflow.db", "console.log", "model.pt", "unlearned_rl.json", "unlearned_rl.certificate.json"} <= names
    assert any("mlruns" in path.parts for path in written)  # MLflow artifacts (configs, plots) were scanned


def test_forgotten_subjects_are_recorded_as_salted_hashes_and_the_salt_is_not(pipeline):
    work, forgotten, inputs = pipeline
    contents = [path.read_bytes() for path in _written_files(work, inputs)]
    for subject in forgotten:
        digest = hash_subject(subject, SALT.encode()).encode()
        assert any(digest in content for content in contents), "the scan must see where forgotten subjects are kept"
    assert not any(SALT.encode() in content for content in contents)


def test_every_workflow_run_of_every_bundle_holds_its_datasets(pipeline):
    work, _, _ = pipeline
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    expected = {"train": {"train"}, "retrain": {"retain", "forget"}, "unlearn": {"retain", "forget"},
                "evaluate": {"retain", "forget", "test"}}  # fmt: skip
    for bundle in (
        "tissuemnist_resnet_classification",
        "chexpert_resnet_classification",
        "mrbrains18_med3d_segmentation",
    ):
        experiment = client.get_experiment_by_name(f"leak-{bundle}")
        runs = {run.data.params["workflow"]: run for run in client.search_runs([experiment.experiment_id])}
        assert sorted(runs) == sorted(expected), bundle
        datasets = {workflow: run_datasets(run) for workflow, run in runs.items()}
        assert {workflow: set(found) for workflow, found in datasets.items()} == expected, bundle
        request = runs["unlearn"].data.params["forget_request_sha256"]
        assert {found["forget"] for found in datasets.values() if "forget" in found} == {request[:36]}, bundle
        assert datasets["retrain"]["retain"] == datasets["unlearn"]["retain"] == datasets["evaluate"]["retain"]
