import json
import os

import pytest
import torch

from medunlearn_monai.model_io import (
    ModelSnapshots,
    ModelWriter,
    check_replaceable,
    check_weights_fit,
    check_writable,
)
from medunlearn_monai.records import evaluation_path, file_sha256, read_record, record_path, write_json


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


@pytest.mark.parametrize("overwrite", [True, "true", "yes", "1"])
def test_an_original_model_is_replaced_only_when_overwrite_is_set(tmp_path, overwrite):
    model = tmp_path / "model.pt"
    check_replaceable(model)  # nothing there yet
    torch.save({}, model)
    for refused in (False, "false", None):
        with pytest.raises(FileExistsError, match="pass --overwrite true to replace it"):
            check_replaceable(model, refused)
    check_replaceable(model, overwrite)
    with pytest.raises(ValueError, match="overwrite must be true or false, got 'maybe'"):
        check_replaceable(model, "maybe")


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


def _train(epochs: int, handler_factory=None) -> torch.nn.Module:
    """A seeded linear model trained ``epochs`` epochs by a stock supervised trainer (SGD with momentum)."""
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    network = torch.nn.Linear(4, 2)
    items = [{"image": torch.randn(4), "label": torch.tensor(index % 2)} for index in range(8)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=torch.utils.data.DataLoader(items, batch_size=4, shuffle=True),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9),
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[handler_factory()] if handler_factory else None,
    )
    trainer.run()
    return network


def test_snapshot_of_epoch_two_is_the_model_of_a_two_epoch_run(tmp_path):
    template = str(tmp_path / "unlearned_{epoch}.pt")
    record = {"workflow": "unlearn", "unlearn_epochs": 3, "max_epochs": 3}
    _train(3, lambda: ModelSnapshots([2, 3], template, record))
    two_epochs = _train(2)
    snapshot = torch.load(tmp_path / "unlearned_2.pt", weights_only=True)
    for name, tensor in two_epochs.state_dict().items():
        assert torch.equal(snapshot[name], tensor), name
    written = read_record(tmp_path / "unlearned_2.pt")
    assert (written["epochs"], written["unlearn_epochs"], written["max_epochs"]) == (2, 2, 2)
    assert written["snapshot_of_epochs"] == 3 and written["workflow"] == "unlearn"
    assert written["model_sha256"] == file_sha256(tmp_path / "unlearned_2.pt")
    # The last epoch is the run's own model, which ModelWriter writes: no snapshot of it.
    assert not (tmp_path / "unlearned_3.pt").exists()


def test_snapshot_template_without_epoch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="epoch"):
        ModelSnapshots([2], str(tmp_path / "model.pt"), {})
