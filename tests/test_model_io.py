import json
import os

import pytest
import torch

from medunlearn_monai.model_io import (
    ModelWriter,
    check_weights_fit,
    check_writable,
    evaluation_path,
    file_sha256,
    read_record,
    record_path,
    write_json,
)


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


def test_output_checks_create_nothing_and_name_the_obstacle(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "model.pt")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_writable(tmp_path / "folder.pt")
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError, match="afile is a file, not a folder"):
        check_writable(tmp_path / "afile" / "models" / "model.pt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_output_check_refuses_a_read_only_folder(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            check_writable(tmp_path / "model.pt")
    finally:
        tmp_path.chmod(0o755)


def test_weights_check_names_missing_and_unexpected_tensors(tmp_path):
    network = torch.nn.Sequential(torch.nn.Linear(2, 3))
    torch.save({"0.weight": torch.zeros(3, 2), "extra.bias": torch.zeros(1)}, tmp_path / "other.pt")
    expected = r"1 missing tensors \(e.g. 0.bias\); 1 unexpected tensors \(e.g. extra.bias\)"
    with pytest.raises(ValueError, match=expected):
        check_weights_fit(network, tmp_path / "other.pt")
    torch.save(network.state_dict(), tmp_path / "same.pt")
    check_weights_fit(network, tmp_path / "same.pt")
