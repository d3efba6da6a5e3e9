"""The bad-input matrix: every malformed input fails through the real ``medunlearn`` CLI, before any training, with
exit code 2 and ONE stderr line naming the cause, leaving no new file, no MLflow run and the original model as it was.

``tests/BAD_INPUTS.md`` lists the cases with the message each one prints. Every case runs ``cli.main`` in this
process except ``mlflow_unreachable`` and one architecture mismatch, which run ``python -m medunlearn_monai.cli`` in a
subprocess to see the real console and timing.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_copies import write_random_model

from medunlearn_monai.cli import main
from medunlearn_monai.data.synthetic import (
    write_synthetic_chexpert,
    write_synthetic_mrbrains18,
    write_synthetic_tissuemnist,
)
from medunlearn_monai.records import file_sha256
from medunlearn_monai.workflows import BUNDLES_DIR

BUNDLES = {
    "tissuemnist": "tissuemnist_resnet_classification",
    "chexpert": "chexpert_resnet_classification",
    "mrbrains18": "mrbrains18_med3d_segmentation",
}
N_TRAIN = 48
TISSUE_IDS = [f"tissuemnist-train-{index:06d}" for index in range(N_TRAIN)]
MRB_IDS = ["mrb-bad-a", "mrb-bad-b", "mrb-bad-c"]
MRB_SMALL = {"depth": 10, "pixdim": [4.0, 4.0, 6.0], "roi_size": [32, 32, 16], "test_subjects": [MRB_IDS[-1]]}


@dataclass(frozen=True)
class Workspace:
    """The shared inputs: valid tiny data and an original model per bundle, and one MLflow store."""

    root: Path
    store: str

    def data(self, bundle: str) -> Path:
        return self.root / bundle / "data"

    def models(self, bundle: str) -> Path:
        return self.root / bundle / "models"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """Write each bundle's tiny data; train the TissueMNIST original through the CLI, save random weights for the
    CheXpert network and a placeholder at the MRBrainS18 output path (its cases all fail before any model is read)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    space = Workspace(root, f"sqlite:///{root / 'mlflow.db'}")
    write_synthetic_tissuemnist(space.data("tissuemnist") / "tissuemnist.npz", n_train=N_TRAIN, n_val=16, n_test=16)
    write_synthetic_chexpert(space.data("chexpert"), n_patients=8, size=32, n_valid_patients=2)
    write_synthetic_mrbrains18(space.data("mrbrains18"), n_subjects=3, spacing=(4.0, 4.0, 6.0), subject_ids=MRB_IDS)
    write_random_model(BUNDLES_DIR / BUNDLES["chexpert"], space.models("chexpert") / "model.pt")
    space.models("mrbrains18").mkdir(parents=True)
    torch.save({"placeholder": torch.zeros(1)}, space.models("mrbrains18") / "model.pt")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", space.store)
        patch.setenv("MEDUNLEARN_SALT", "bad-inputs-salt")
        code = main(["run", BUNDLES["tissuemnist"], "train", *_flags(_common(space, "tissuemnist", "setup"))])
    assert code == 0 and (space.models("tissuemnist") / "model.pt").is_file()
    return space


def _common(space: Workspace, bundle: str, case: str) -> dict[str, Any]:
    """Valid overrides of a bundle's tiny run; a case changes one of them or one input."""
    common = {"dataset_dir": space.data(bundle), "model_dir": space.models(bundle), "experiment_name": f"bad-{case}"}
    if bundle == "tissuemnist":
        return {**common, "batch_size": 16, "max_epochs": 1, "unlearn_epochs": 1}
    if bundle == "chexpert":
        return {**common, "image_size": 32, "batch_size": 8, "max_epochs": 1, "unlearn_epochs": 1}
    return {**common, **MRB_SMALL, "max_epochs": 1, "unlearn_epochs": 1}


def _flags(overrides: dict[str, Any]) -> list[str]:
    return [text for key, value in overrides.items() for text in (f"--{key}", str(value))]


def _request(folder: Path, name: str, text: str) -> dict[str, str]:
    (folder / name).write_text(text)
    return {"forget_request_file": str(folder / name)}


def _copy(space: Workspace, bundle: str, folder: Path) -> Path:
    return Path(shutil.copytree(space.data(bundle), folder / "data"))


def _npz(space: Workspace, folder: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> dict[str, Path]:
    with np.load(space.data("tissuemnist") / "tissuemnist.npz") as archive:
        arrays = dict(archive)
    edit(arrays)
    (folder / "data").mkdir()
    np.savez(folder / "data" / "tissuemnist.npz", **arrays)
    return {"dataset_dir": folder / "data"}


def _not_an_archive(space: Workspace, folder: Path) -> dict[str, Path]:
    (folder / "data").mkdir()
    (folder / "data" / "tissuemnist.npz").write_bytes(b"\x89PNG, not an npz archive")
    return {"dataset_dir": folder / "data"}


def _truncated_source_model(space: Workspace, folder: Path) -> dict[str, Any]:
    (folder / "cut.pt").write_bytes((space.models("tissuemnist") / "model.pt").read_bytes()[:5000])
    return {**_request(folder, "r.txt", TISSUE_IDS[0]), "original_model": folder / "cut.pt"}


def _model_dir_under_a_file(space: Workspace, folder: Path) -> dict[str, Path]:
    # A folder below a regular file cannot be created even by root, for whom chmod 0555 means nothing.
    (folder / "afile").write_text("not a folder")
    return {"model_dir": folder / "afile" / "models"}


def _set_label(arrays: dict[str, np.ndarray]) -> None:
    arrays["train_labels"][3, 0] = 8


def _chexpert_csv(space: Workspace, folder: Path, edit: Callable[[list[list[str]]], list[list[str]]]) -> dict:
    data = _copy(space, "chexpert", folder)
    rows = list(csv.reader((data / "train.csv").read_text().splitlines()))
    with open(data / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(edit(rows))
    return {"dataset_dir": data}


def _drop_column(rows: list[list[str]], name: str) -> list[list[str]]:
    index = rows[0].index(name)
    return [row[:index] + row[index + 1 :] for row in rows]


def _set_cell(rows: list[list[str]], name: str, value: str) -> list[list[str]]:
    rows[1][rows[0].index(name)] = value
    return rows


def _first_frontal_image(data: Path) -> Path:
    rows = list(csv.DictReader((data / "train.csv").read_text().splitlines()))
    path = next(row["Path"] for row in rows if row["Frontal/Lateral"] == "Frontal")
    return data / path.split("/", 1)[1]


def _undecodable_image(space: Workspace, folder: Path) -> dict:
    data = _copy(space, "chexpert", folder)
    image = _first_frontal_image(data)
    image.write_bytes(image.read_bytes()[:100])
    return {"dataset_dir": data}


def _mrb(space: Workspace, folder: Path, edit: Callable[[Path], None]) -> dict:
    data = _copy(space, "mrbrains18", folder)
    edit(data / "training" / MRB_IDS[0])
    return {"dataset_dir": data}


def _rewrite_volume(path: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    volume = nib.load(path)
    nib.save(nib.Nifti1Image(edit(np.asarray(volume.dataobj).copy()), volume.affine), path)


def _with_nan(voxels: np.ndarray) -> np.ndarray:
    voxels.reshape(-1)[:10] = np.nan
    return voxels


def _with_label(voxels: np.ndarray) -> np.ndarray:
    voxels.reshape(-1)[0] = 12
    return voxels


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Case:
    """One malformed input: how to make it (``prepare`` returns the overrides that differ from a valid run)."""

    name: str
    bundle: str
    workflow: str
    message: str
    prepare: Callable[[Workspace, Path], dict[str, Any]]
    in_subprocess: bool = False

    def __str__(self) -> str:
        return f"{self.bundle}-{self.name}"


CASES = [
    Case("request_unknown_subject", "tissuemnist", "unlearn --strategy rl",
         "1 of 2 subjects are not in the training data (entries #2)",
         lambda s, f: _request(f, "r.txt", f"{TISSUE_IDS[0]}\ntissuemnist-train-999999\n")),
    Case("request_duplicate_subject", "tissuemnist", "unlearn --strategy rl",
         "names the same subject more than once (entries #1, #3)",
         lambda s, f: _request(f, "r.txt", f"{TISSUE_IDS[1]}\n{TISSUE_IDS[2]}\n{TISSUE_IDS[1]}\n")),
    Case("request_empty", "tissuemnist", "unlearn --strategy rl", "is empty: it names no subject to forget",
         lambda s, f: _request(f, "r.txt", "# nobody yet\n")),
    Case("request_all_subjects", "tissuemnist", "train",
         f"names all {N_TRAIN} training subjects: nothing would remain to train on",
         lambda s, f: _request(f, "r.txt", "\n".join(TISSUE_IDS))),
    Case("request_bad_json", "tissuemnist", "unlearn --strategy rl", "is not valid JSON",
         lambda s, f: _request(f, "r.json", '{"subjects": [')),
    Case("request_json_not_a_list", "tissuemnist", "unlearn --strategy rl", "must hold a list of subject IDs",
         lambda s, f: _request(f, "r.json", f'{{"subjects": "{TISSUE_IDS[0]}"}}')),
    Case("request_unknown_suffix", "tissuemnist", "unlearn --strategy rl",
         "has suffix '.xlsx'; use one of .txt, .csv, .json", lambda s, f: _request(f, "r.xlsx", TISSUE_IDS[0])),
    Case("request_csv_without_id_column", "tissuemnist", "unlearn --strategy rl",
         "it needs one of subject, subject_id", lambda s, f: _request(f, "r.csv", f"name,date\n{TISSUE_IDS[0]},x\n")),
    Case("request_file_missing", "tissuemnist", "unlearn --strategy rl", "does not exist",
         lambda s, f: {"forget_request_file": f / "missing.txt"}),
    Case("unlearn_without_request", "tissuemnist", "unlearn --strategy rl", "unlearn needs a forget request",
         lambda s, f: {}),
    Case("unknown_strategy", "tissuemnist", "unlearn --strategy forget_everything",
         "ValueError: unlearn needs --strategy, one of", lambda s, f: {}),
    Case("unknown_bundle", "tissuemnist", "train", "FileNotFoundError: no bundle 'no_such_bundle'",
         lambda s, f: {}),
    Case("npz_missing_key", "tissuemnist", "train", "missing key(s) ['train_labels']",
         lambda s, f: _npz(s, f, lambda arrays: arrays.pop("train_labels"))),
    Case("npz_label_out_of_range", "tissuemnist", "train", "train_labels holds values [8] outside the class range 0..7",
         lambda s, f: _npz(s, f, _set_label)),
    Case("npz_not_an_archive", "tissuemnist", "train", "not a valid .npz archive (not a zip file", _not_an_archive),
    Case("dataset_dir_missing", "tissuemnist", "train", "FileNotFoundError: MedMNIST file not found",
         lambda s, f: {"dataset_dir": f / "nowhere"}),
    Case("source_model_missing", "tissuemnist", "unlearn --strategy rl", "FileNotFoundError: model file",
         lambda s, f: {**_request(f, "r.txt", TISSUE_IDS[0]), "original_model": f / "gone.pt"}),
    Case("source_model_truncated", "tissuemnist", "unlearn --strategy rl",
         "cannot be loaded as weights: it is not a PyTorch zip archive (truncated",
         _truncated_source_model),
    Case("wrong_architecture", "tissuemnist", "unlearn --strategy rl",
         "does not fit this bundle's network: 2 tensors of another shape (e.g. fc.bias: file [5], network [8])",
         lambda s, f: {**_request(f, "r.txt", TISSUE_IDS[0]), "original_model": s.models("chexpert") / "model.pt"},
         in_subprocess=True),
    Case("evaluated_model_missing", "tissuemnist", "evaluate", "FileNotFoundError: model file",
         lambda s, f: {"model_path": f / "gone.pt"}),
    Case("output_is_source_model", "tissuemnist", "unlearn --strategy rl", "is the source model",
         lambda s, f: {**_request(f, "r.txt", TISSUE_IDS[0]), "output_model": s.models("tissuemnist") / "model.pt"}),
    Case("output_under_a_file", "tissuemnist", "train", "is a file, not a folder", _model_dir_under_a_file),
    Case("train_over_original", "tissuemnist", "train",
         "already holds a trained model: pass --overwrite true to replace it",
         lambda s, f: {"model_dir": s.models("tissuemnist")}),
    Case("batch_larger_than_data", "tissuemnist", "train",
         f"the training data holds {N_TRAIN} items, fewer than batch_size 64: the loader drops its last partial batch",
         lambda s, f: {"batch_size": 64}),
    Case("sisa_too_many_shards", "tissuemnist", "train --strategy sisa",
         f"hold no training item: {N_TRAIN} items are too few for 100 shards; lower sisa_shards",
         lambda s, f: {"sisa_shards": 100}),
    Case("sisa_source_not_sharded", "tissuemnist", "unlearn --strategy sisa", "has no shard manifest",
         lambda s, f: {**_request(f, "r.txt", TISSUE_IDS[0]), "sisa_model": s.models("tissuemnist") / "model.pt"}),
    Case("mlflow_unreachable", "tissuemnist", "train", "TrackingServerUnreachable: MLflow tracking server http://",
         lambda s, f: {}, in_subprocess=True),
    Case("csv_missing_column", "chexpert", "train", "missing column(s) ['Sex']",
         lambda s, f: _chexpert_csv(s, f, lambda rows: _drop_column(rows, "Sex"))),
    Case("label_out_of_range", "chexpert", "train", "row 2: Cardiomegaly is '2.0'; expected 1.0, 0.0, -1.0 or blank",
         lambda s, f: _chexpert_csv(s, f, lambda rows: _set_cell(rows, "Cardiomegaly", "2.0"))),
    Case("undecodable_image", "chexpert", "train", "view1_frontal.jpg: not a readable image", _undecodable_image),
    Case("dataset_dir_missing", "chexpert", "train", "FileNotFoundError: CheXpert CSV not found",
         lambda s, f: {"dataset_dir": f / "nowhere"}),
    Case("wrong_architecture", "chexpert", "evaluate",
         "does not fit this bundle's network: 2 tensors of another shape (e.g. fc.bias: file [8], network [5])",
         lambda s, f: {"model_path": s.models("tissuemnist") / "model.pt"}),
    Case("nifti_corrupt", "mrbrains18", "train", "FLAIR.nii.gz: not a readable NIfTI volume",
         lambda s, f: _mrb(s, f, lambda subject: (subject / "pre" / "FLAIR.nii.gz").write_bytes(os.urandom(2048)))),
    Case("nifti_truncated", "mrbrains18", "train", "reg_T1.nii.gz: not a readable NIfTI volume",
         lambda s, f: _mrb(s, f, lambda subject: (subject / "pre" / "reg_T1.nii.gz").write_bytes(
             (subject / "pre" / "reg_T1.nii.gz").read_bytes()[:3000]))),
    Case("image_label_shape_mismatch", "mrbrains18", "train", "label shape (5, 5, 5) differs from image shape",
         lambda s, f: _mrb(s, f, lambda subject: nib.save(
             nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), subject / "segm.nii.gz"))),
    Case("nan_voxels", "mrbrains18", "train", "reg_IR.nii.gz: 10 voxels are NaN or infinite",
         lambda s, f: _mrb(s, f, lambda subject: _rewrite_volume(subject / "pre" / "reg_IR.nii.gz", _with_nan))),
    Case("label_out_of_range", "mrbrains18", "train", "label values [12] are not MRBrainS18 labels",
         lambda s, f: _mrb(s, f, lambda subject: _rewrite_volume(subject / "segm.nii.gz", _with_label))),
    Case("missing_modality", "mrbrains18", "train", "reg_IR.nii.gz (or IR.nii.gz): IR image not found",
         lambda s, f: _mrb(s, f, lambda subject: (subject / "pre" / "reg_IR.nii.gz").unlink())),
    Case("unknown_test_subject", "mrbrains18", "train",
         "ValueError: test_subjects entries #1 are not subjects of the data set",
         lambda s, f: {"test_subjects": ["mrb-nobody"]}),
    Case("request_all_subjects", "mrbrains18", "unlearn --strategy noisy_label", "names all 2 training subjects",
         lambda s, f: _request(f, "r.txt", "\n".join(MRB_IDS[:2]))),
    Case("unknown_input_regime", "mrbrains18", "train",
         "ValueError: Unknown input_regime 'slices'; expected one of ('patch', 'whole')",
         lambda s, f: {"input_regime": "slices"}),
]  # fmt: skip


def _listing(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` (but the MLflow store, checked by run) with its size and modification time."""
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith("mlflow.db")
    }


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(case, workspace, tmp_path, capsys):
    prepared = case.prepare(workspace, tmp_path)
    overrides = {**_common(workspace, case.bundle, str(case)), **prepared}
    if case.workflow.startswith("train") and "model_dir" not in prepared:
        overrides["model_dir"] = tmp_path / "models"  # a training never replaces the workspace's original model
    bundle = "no_such_bundle" if case.name == "unknown_bundle" else BUNDLES[case.bundle]
    argv = ["run", bundle, *case.workflow.split(), *_flags(overrides)]
    store = f"http://127.0.0.1:{_closed_port()}" if case.name == "mlflow_unreachable" else workspace.store
    original = workspace.models(case.bundle) / "model.pt"
    digest, before = file_sha256(original), _listing(workspace.root, tmp_path)
    requested = (tmp_path / "r.txt").read_text().split() if (tmp_path / "r.txt").is_file() else []

    started = time.monotonic()
    if case.in_subprocess:
        environment = {**os.environ, "MLFLOW_TRACKING_URI": store}
        result = subprocess.run(
            [sys.executable, "-m", "medunlearn_monai.cli", *argv],
            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        code, output, errors = result.returncode, result.stdout, result.stderr
    else:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_URI", store)
            code = main(argv)
        output, errors = capsys.readouterr()
    seconds = time.monotonic() - started

    lines = [line for line in errors.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("medunlearn: error: "), errors[-3000:]
    assert case.message in lines[0]
    assert not [subject for subject in requested if subject in output + errors]
    assert "Engine run " not in output  # no engine started: ignite logs "Engine run starting/resuming ..."
    assert seconds < 60
    assert _listing(workspace.root, tmp_path) == before
    assert file_sha256(original) == digest
    assert mlflow.MlflowClient(workspace.store).get_experiment_by_name(f"bad-{case}") is None


def test_the_matrix_covers_every_bundle_and_at_least_twenty_cases():
    assert len(CASES) >= 20 and {case.bundle for case in CASES} == set(BUNDLES)
    assert len({str(case) for case in CASES}) == len(CASES)
