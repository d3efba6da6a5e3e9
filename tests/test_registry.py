"""Registering unlearned models in MLflow's model registry, pinned by the forget request's hash."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from medunlearn_monai.cli import main
from medunlearn_monai.forget import ForgetRequest, load_salt
from medunlearn_monai.records import evaluation_path, file_sha256, record_path, write_json
from medunlearn_monai.registry import certificate_path, register_model
from medunlearn_monai.tracking import tracking_uri

FORGOTTEN = ("patient-0042", "patient-0099")


def write_model(path: Path, request: ForgetRequest | None, certificate: bool = True) -> Path:
    """A model file as the workflows leave it: weights, record, evaluation and (optionally) a certificate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    request_sha256 = request.sha256(load_salt()) if request else "none"
    write_json(
        record_path(path),
        {
            "bundle": "tissuemnist_resnet_classification",
            "workflow": "unlearn" if request else "train",
            "strategy": "salun" if request else "original",
            "forget_request_sha256": request_sha256,
            "forget_subjects": len(request.subject_ids) if request else 0,
            "model_sha256": file_sha256(path),
        },
    )
    write_json(evaluation_path(path), {"forget_acc": 0.8, "forget_request_sha256": request_sha256})
    if certificate:
        write_json(certificate_path(path), {"forget_request_sha256": request_sha256, "model_sha256": "..."})
    return path


def test_second_registration_is_version_two_tagged_and_aliased_by_the_request(tmp_path):
    request = ForgetRequest(FORGOTTEN)
    model = write_model(tmp_path / "models" / "unlearned_salun.pt", request)
    first = register_model(model, "tissue-classifier")
    second = register_model(model, "tissue-classifier")
    assert (first.version, second.version) == (1, 2)

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())
    version = client.get_model_version("tissue-classifier", "2")
    assert version.tags["forget_request_sha256"] == request.sha256(load_salt())
    assert version.tags["model_sha256"] == file_sha256(model)
    assert version.tags["certificate_sha256"] == file_sha256(certificate_path(model))
    assert version.tags["strategy"] == "salun" and version.source == f"runs:/{second.run_id}/model"
    assert second.alias == f"request-{request.sha256(load_salt())}"
    assert int(client.get_model_version_by_alias("tissue-classifier", second.alias).version) == 2
    artifacts = {Path(entry.path).name for entry in client.list_artifacts(second.run_id, "model")}
    assert artifacts == {"unlearned_salun.pt", "unlearned_salun.json", "unlearned_salun.eval.json",
                         "unlearned_salun.certificate.json"}  # fmt: skip
    downloaded = Path(mlflow.artifacts.download_artifacts(f"{second.alias_uri}", dst_path=str(tmp_path / "pinned")))
    assert file_sha256(downloaded / "unlearned_salun.pt") == file_sha256(model)

    stored = [path for path in tmp_path.rglob("*") if path.is_file() and "models" not in path.parts]
    assert any(path.name == "mlflow.db" for path in stored)
    for path in stored:
        assert not [subject for subject in FORGOTTEN if subject.encode() in path.read_bytes()], path


def test_a_model_without_certificate_or_request_registers_without_alias(tmp_path):
    model = write_model(tmp_path / "models" / "model.pt", None, certificate=False)
    entry = register_model(model, "tissue-classifier")
    assert entry.alias is None and entry.alias_uri is None
    assert entry.artifacts == ("model.pt", "model.json", "model.eval.json")


def test_a_model_changed_after_its_record_is_refused(tmp_path):
    model = write_model(tmp_path / "models" / "unlearned_salun.pt", ForgetRequest(FORGOTTEN))
    torch.save(torch.nn.Linear(3, 2).state_dict(), model)
    with pytest.raises(ValueError, match="changed after it was written"):
        register_model(model, "tissue-classifier")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())
    assert client.search_registered_models() == []


def test_cli_registers_and_reports_a_missing_model(tmp_path, capsys):
    model = write_model(tmp_path / "models" / "unlearned_salun.pt", ForgetRequest(FORGOTTEN))
    assert main(["register", "--model_path", str(model), "--name", "tissue-classifier"]) == 0
    output = capsys.readouterr().out
    assert "Registered tissue-classifier version 1" in output and "models:/tissue-classifier@request-" in output
    assert main(["register", "--model_path", str(tmp_path / "nope.pt"), "--name", "tissue-classifier"]) == 2
    assert "FileNotFoundError: model file" in capsys.readouterr().err
