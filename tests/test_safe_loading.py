"""Untrusted files: a pickle that would run code is refused by name, and data files are never evaluated as config."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from medunlearn_monai.cli import main
from medunlearn_monai.data.synthetic import write_synthetic_chexpert, write_synthetic_tissuemnist
from medunlearn_monai.networks.med3d import load_medicalnet_weights
from medunlearn_monai.safe_loading import SafeCheckpointLoader, UntrustedCheckpointError, load_weights

TISSUEMNIST = "tissuemnist_resnet_classification"


class _RunsCode:
    """Unpickles by calling ``os.system``: what a malicious model file looks like."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def booby_trapped(tmp_path) -> tuple[Path, Path]:
    """A ``.pt`` file that creates a marker file when unpickled without ``weights_only``, and that marker's path."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode(f"touch {marker}")}, path)
    torch.load(path, weights_only=False)  # prove the trap is real: a plain unpickling runs the command
    assert marker.exists()
    marker.unlink()
    return path, marker


@pytest.fixture
def tiny_tissuemnist(tmp_path) -> dict[str, str]:
    """CLI overrides for a tiny TissueMNIST data set and a forget request of two real subjects."""
    write_synthetic_tissuemnist(tmp_path / "data" / "tissuemnist.npz", n_train=40, n_val=16, n_test=16)
    (tmp_path / "request.txt").write_text("tissuemnist-train-000001\ntissuemnist-train-000002\n")
    return {
        "--dataset_dir": str(tmp_path / "data"),
        "--model_dir": str(tmp_path / "models"),
        "--forget_request_file": str(tmp_path / "request.txt"),
        "--batch_size": "8",
        "--max_epochs": "1",
    }


def _cli(capsys, *arguments: str, **overrides: str) -> tuple[int, str]:
    code = main([*arguments, *(part for pair in overrides.items() for part in pair)])
    return code, capsys.readouterr().err


def test_load_weights_refuses_a_pickle_that_would_run_code_and_names_the_file(booby_trapped):
    path, marker = booby_trapped
    with pytest.raises(UntrustedCheckpointError, match=r"evil\.pt was refused: it refers to (posix|os|nt)\.system"):
        load_weights(path)
    assert not marker.exists()


def test_load_weights_reads_tensors_and_leaves_other_unpickling_errors_alone(tmp_path):
    torch.save({"weight": torch.ones(2)}, tmp_path / "plain.pt")
    assert torch.equal(load_weights(tmp_path / "plain.pt")["weight"], torch.ones(2))
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(Exception) as raised:
        load_weights(tmp_path / "corrupt.pt")
    assert not isinstance(raised.value, UntrustedCheckpointError)


def test_safe_checkpoint_loader_refuses_the_file_when_the_engine_starts(booby_trapped):
    path, marker = booby_trapped
    engine = Engine(lambda engine, batch: None)
    SafeCheckpointLoader(load_path=str(path), load_dict={"model": torch.nn.Linear(2, 2)}).attach(engine)
    with pytest.raises(UntrustedCheckpointError, match="evil.pt"):
        engine.run([0], max_epochs=1)
    assert not marker.exists()


def test_medicalnet_weights_file_is_refused(booby_trapped):
    path, marker = booby_trapped
    with pytest.raises(UntrustedCheckpointError, match="evil.pt"):
        load_medicalnet_weights(torch.nn.Linear(2, 2), path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("workflow", "model_option"),
    [("unlearn", "--source_model"), ("evaluate", "--model_path")],
)
def test_cli_refuses_a_code_carrying_model_with_one_message(
    capsys, booby_trapped, tiny_tissuemnist, workflow, model_option
):
    path, marker = booby_trapped
    strategy = ["--strategy", "rl"] if workflow == "unlearn" else []
    code, error = _cli(capsys, "run", TISSUEMNIST, workflow, *strategy, **tiny_tissuemnist, **{model_option: str(path)})
    assert code == 2
    assert error.strip().splitlines()[-1].startswith(f"medunlearn: error: UntrustedCheckpointError: {path} was refused")
    assert not marker.exists()
    assert not (Path(tiny_tissuemnist["--model_dir"]) / "unlearned_rl.pt").exists()


def test_inference_refuses_a_code_carrying_model(capsys, booby_trapped, tmp_path):
    # inference.json keeps MONAI's own CheckpointLoader (weights_only=True) so MONAI Label and Deploy can read it alone.
    path, marker = booby_trapped
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "images" / "case.png")
    code, error = _cli(
        capsys,
        "run",
        TISSUEMNIST,
        "inference",
        **{"--model_path": str(path), "--dataset_dir": str(tmp_path / "images")},
    )
    assert code == 2
    assert "UnpicklingError: Weights only load failed" in error
    assert not marker.exists()


def test_dollar_expression_in_a_forget_request_json_is_an_unknown_subject(capsys, tmp_path, tiny_tissuemnist):
    marker = tmp_path / "code_ran"
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"subjects": [f"$__import__('os').system('touch {marker}')"]}))
    overrides = {**tiny_tissuemnist, "--forget_request_file": str(request)}
    code, error = _cli(capsys, "run", TISSUEMNIST, "train", **overrides)
    assert code == 2
    assert "medunlearn: error: ForgetRequestError: Forget request" in error
    assert "1 of 1 subjects are not in the training data" in error
    assert not marker.exists()


def test_dollar_expression_in_a_chexpert_csv_cell_is_a_bad_value(capsys, tmp_path):
    marker = tmp_path / "code_ran"
    data = write_synthetic_chexpert(tmp_path / "CheXpert-v1.0-small", n_patients=6, size=16, n_valid_patients=3)
    rows = list(csv.reader((data / "train.csv").read_text().splitlines()))
    frontal = next(index for index, row in enumerate(rows) if row[rows[0].index("Frontal/Lateral")] == "Frontal")
    rows[frontal][rows[0].index("Sex")] = f"$__import__('os').system('touch {marker}')"
    with open(data / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    code, error = _cli(capsys, "run", "chexpert_resnet_classification", "train", **{"--dataset_dir": str(data)})
    assert code == 2
    assert "medunlearn: error: CheXpertFormatError:" in error
    assert f'row {frontal + 1}: Sex is "$__import__' in error
    assert not marker.exists()
