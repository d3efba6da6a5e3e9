import json

import pytest
import torch

from medunlearn_monai.model_io import ModelWriter, evaluation_path, file_sha256, read_record, record_path, write_json


def test_sidecar_paths():
    assert str(record_path("models/unlearned_rl.pt")) == "models/unlearned_rl.json"
    assert str(evaluation_path("models/unlearned_rl.pt")) == "models/unlearned_rl.eval.json"


def test_atomic_json_write_leaves_no_temporary_files(tmp_path):
    write_json(tmp_path / "out" / "record.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "out" / "record.json").read_text()) == {"a": [1, 2], "b": 1}
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["record.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "record.json"
    write_json(target, {"version": 1})
    with pytest.raises(TypeError):
        write_json(target, {"version": object()})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [path.name for path in tmp_path.iterdir()] == ["record.json"]


def test_writer_refuses_to_overwrite_its_source_model(tmp_path):
    source = tmp_path / "model.pt"
    torch.save({}, source)
    with pytest.raises(ValueError, match="is the source model"):
        ModelWriter(tmp_path / "." / "model.pt", {}, source_model=source)


def test_read_record_of_missing_model_fails_and_foreign_model_has_empty_record(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_record(tmp_path / "absent.pt")
    torch.save({}, tmp_path / "foreign.pt")
    assert read_record(tmp_path / "foreign.pt") == {}
    assert len(file_sha256(tmp_path / "foreign.pt")) == 64
