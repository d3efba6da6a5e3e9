"""A guest's config list, layout and task, its command line, and the clear errors for bad input; nothing trains."""

from __future__ import annotations

import json
import logging

import pytest
from guest_data import guest_bundle, write_spleen_task

from medunlearn_monai.cli import main
from medunlearn_monai.guest.adapter import LAYOUTS_DIR, GuestKeyError
from medunlearn_monai.guest.bundle import GuestBundleError
from medunlearn_monai.guest.workflows import CONFIGS_DIR, plan, strategies


def write_bundle(folder, config, metadata=None):
    """A bundle folder whose configs/train.json is ``config``."""
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "train.json").write_text(json.dumps(config))
    if metadata is not None:
        (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    return folder


def test_spleen_config_list_is_its_own_then_ours():
    guest = guest_bundle("spleen_ct_segmentation")
    run = plan(guest, "unlearn", "salun")
    assert (run.adapter.layout, run.task) == (LAYOUTS_DIR / "nested.json", "segmentation")
    names = ["layouts/nested.json", "common.json", "train.json", "unlearn.json", "tasks/segmentation.json",
             "strategies/salun.json"]  # fmt: skip
    assert run.config_files() == [str(guest / "configs" / "train.json"), *(str(CONFIGS_DIR / name) for name in names)]
    assert run.overrides["bundle_root"] == str(guest)


def test_template_is_read_through_the_flat_layout_from_its_yaml():
    guest = guest_bundle("classification_template")
    run = plan(guest, "evaluate")
    assert (run.adapter.layout.name, run.task) == ("flat.json", "classification")
    assert run.config_files()[0] == str(guest / "configs" / "train.yaml")
    assert run.config_files()[-2:] == [
        str(CONFIGS_DIR / "evaluate.json"),
        str(CONFIGS_DIR / "tasks" / "classification.json"),
    ]


def test_shipped_strategies():
    assert strategies() == ["ft", "l1_sparse", "neggrad_plus", "rl", "salun"]


def test_print_command_shows_the_monai_bundle_run_and_runs_nothing(tmp_path, capsys):
    guest = guest_bundle("spleen_ct_segmentation")
    assert (
        main(["guest", str(guest), "unlearn", "--strategy", "rl", "--forget_request_file", "r.txt", "--print_command"])
        == 0
    )
    command = capsys.readouterr().out.strip()
    assert command.startswith(f"python -m monai.bundle run --config_file \"['{guest / 'configs' / 'train.json'}',")
    assert "strategies/rl.json']\"" in command and "--forget_request_file r.txt" in command
    assert "'--validate#handlers#2#_disabled_' True" in command
    assert list(tmp_path.iterdir()) == []


def test_subject_key_missing_from_the_items_is_a_clear_error(tmp_path, capsys):
    write_spleen_task(tmp_path / "data", [f"spleen_{number}" for number in range(1, 11)])  # the guest validates on 9
    guest = str(guest_bundle("spleen_ct_segmentation"))
    assert main(["guest", guest, "train", "--dataset_dir", str(tmp_path / "data"), "--subject_key", "patient"]) == 2
    message = "GuestDataError: item #1 of the guest's data list has no key 'patient' (--subject_key); its keys are"
    assert message in capsys.readouterr().err
    assert not (tmp_path / "guest_models").exists()


def test_items_key_names_the_guests_own_list_and_an_unknown_one_is_refused():
    guest = guest_bundle("classification_template")
    assert plan(guest, "train", items_key="val_sub").overrides["guest_items"] == "@val_sub"
    with pytest.raises(GuestKeyError, match=r"no key train_items_list \(read as guest_items\).*\(--items_key"):
        plan(guest, "train", items_key="train_items_list")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["evaluate", "--layout", "sideways"], "ValueError: --layout must be one of nested, flat or a layout file"),
        (["evaluate", "--task", "detection"], "ValueError: --task must be one of segmentation, classification"),
        (["unlearn"], "ValueError: unlearn needs --strategy, one of ft, l1_sparse, neggrad_plus, rl, salun; got None."),
        (["train", "--strategy", "rl"], "ValueError: --strategy applies to unlearn only, not to train."),
        (["infer"], "ValueError: unknown workflow 'infer'; choose one of train, unlearn, evaluate, verify."),
        (["verify"], "ValueError: verify needs --certificate FILE and --model_path FILE"),
        (["train", "--guest_configs", "train.json,extra.json"], "GuestBundleError: "),
    ],
)
def test_bad_options_fail_with_one_line_and_exit_two(arguments, message, capsys):
    assert main(["guest", str(guest_bundle("spleen_ct_segmentation")), *arguments]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"medunlearn: error: {message}")


def test_folder_without_configs_is_not_a_bundle(tmp_path, capsys):
    assert main(["guest", str(tmp_path), "train"]) == 2
    assert f"GuestBundleError: {tmp_path} has no configs/ folder: it is not a MONAI bundle." in capsys.readouterr().err


def test_bundle_without_a_training_config_is_refused(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "inference.json").write_text("{}")
    with pytest.raises(GuestBundleError, match="has no train.json or train.yaml: unlearning retrains"):
        plan(tmp_path, "train")


def test_bundle_of_another_shape_needs_a_layout_file(tmp_path):
    write_bundle(tmp_path, {"network": "$None", "engine": {"_target_": "SupervisedTrainer"}})
    with pytest.raises(GuestKeyError, match="none of the keys train#trainer, trainer .* pass --layout FILE"):
        plan(tmp_path, "train")


def test_layout_keys_the_guest_lacks_are_named_before_anything_runs(tmp_path):
    write_bundle(tmp_path, {"trainer": {"_target_": "SupervisedTrainer"}, "network": "$None"})
    with pytest.raises(GuestKeyError) as error:
        plan(tmp_path, "train", task="classification")
    assert "no key train_sub (read as guest_items), val_sub (read as guest_test_items)" in str(error.value)
    assert "train_dataloader (written as train_dataloader#dataset)" in str(error.value)


def test_task_comes_from_the_metadata_or_the_command_line(tmp_path):
    config = json.loads((guest_bundle("spleen_ct_segmentation") / "configs" / "train.json").read_text())
    write_bundle(tmp_path / "plain", config)
    with pytest.raises(GuestBundleError, match="metadata does not describe its output 'pred': pass --task"):
        plan(tmp_path / "plain", "train")
    assert plan(tmp_path / "plain", "train", task="segmentation").task == "segmentation"
    metadata = {"network_data_format": {"outputs": {"pred": {"format": "classes"}}}}
    assert plan(write_bundle(tmp_path / "described", config, metadata), "train").task == "classification"


def test_guest_keys_our_overlays_also_set_are_warned_about(tmp_path, caplog):
    config = json.loads((guest_bundle("spleen_ct_segmentation") / "configs" / "train.json").read_text())
    metadata = {"network_data_format": {"outputs": {"pred": {"format": "segmentation"}}}}
    write_bundle(tmp_path, {**config, "seed": 7, "salt": "x"}, metadata)
    with caplog.at_level(logging.WARNING, logger="medunlearn_monai.guest.workflows"):
        plan(tmp_path, "train")
    assert "The bundle's keys salt, seed are also set by our overlays: its uses of them get ours." in caplog.text
