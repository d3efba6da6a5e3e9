import pytest

from medunlearn_monai.cli import main
from medunlearn_monai.comparison import format_table


def test_table_shows_percentages_points_and_factors():
    rows = [
        {
            "method": "retrain",
            "retain_acc": 0.991,
            "forget_acc": 0.7,
            "test_acc": 0.69,
            "mia_efficacy": 0.5,
            "gap_to_retrain": 0.0,
            "unlearn_seconds": 60.0,
            "speedup_vs_retrain": 1.0,
        },
        {
            "method": "salun",
            "retain_acc": 0.95,
            "forget_acc": 0.72,
            "test_acc": 0.66,
            "mia_efficacy": 0.4,
            "gap_to_retrain": 3.25,
            "unlearn_seconds": 6.0,
            "speedup_vs_retrain": 10.0,
        },
        {
            "method": "original",
            "retain_acc": 0.99,
            "forget_acc": 0.99,
            "test_acc": 0.7,
            "mia_efficacy": 0.1,
            "gap_to_retrain": None,
            "unlearn_seconds": None,
            "speedup_vs_retrain": None,
        },
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == [
        "method",
        "retain",
        "acc",
        "forget",
        "acc",
        "test",
        "acc",
        "MIA",
        "Avg.",
        "Gap",
        "seconds",
        "speedup",
    ]
    assert lines[3].split() == ["salun", "95.0", "72.0", "66.0", "40.0", "3.25", "6.00", "10.0x"]
    assert lines[4].split()[-3:] == ["-", "-", "-"]
    assert len({len(line) for line in lines}) == 1


@pytest.mark.parametrize(
    "arguments",
    [
        ["--help"],
        ["run", "--help"],
        ["verify-certificate", "-h"],
        ["protocol", "--help"],
        ["run", "tissuemnist_resnet_classification", "train", "--max_epochs", "1", "--help"],
    ],
)
def test_help_exits_zero_and_runs_nothing(capsys, tmp_path, arguments):
    assert main(arguments) == 0
    shown = capsys.readouterr()
    assert "NAME" in shown.out + shown.err and "SYNOPSIS" in shown.out + shown.err
    assert list(tmp_path.iterdir()) == []  # no workflow started: no MLflow store, no model


def test_errors_become_one_message_and_exit_code_two(capsys):
    assert main(["run", "tissuemnist_resnet_classification", "unlearn", "--strategy", "magic"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "medunlearn: error: ValueError: unlearn needs --strategy, one of ft, ga, l1_sparse, neggrad_plus, rl, "
        "rl_stop, rum, salun, salun_stop, scrub, ssd, sisa; got 'magic'."
    ]


def test_compare_of_missing_experiment_fails_cleanly(capsys):
    assert main(["compare", "--experiment", "absent"]) == 2
    assert "MLflow experiment 'absent' at " in capsys.readouterr().err


def test_segmentation_table_shows_dice_mae_and_relative_percentages():
    rows = [{"method": "noisy_label", "retain_dice": 0.9012, "forget_dice": 0.5, "forget_dice_decrease_pct": 45.04,
             "retain_dice_kept_pct": 96.0, "forget_mae": 0.1234, "speedup_vs_retrain": 4.0}]  # fmt: skip
    header, _, row = format_table(rows).splitlines()
    assert "forget decrease %" in header and "retain kept %" in header and "forget MAE" in header
    assert row.split() == ["noisy_label", "0.901", "0.500", "45.0", "96.0", "0.123", "4.0x"]


def test_synthesize_writes_mrbrains18_subjects_in_the_challenge_layout(tmp_path, capsys):
    code = main(["synthesize", "--dataset", "mrbrains18", "--output_dir", str(tmp_path / "data"),
                 "--n_subjects", "2", "--spacing", "[4.0,4.0,6.0]"])  # fmt: skip
    assert code == 0
    assert sorted(path.name for path in (tmp_path / "data" / "training").iterdir()) == ["1", "4"]
    assert (tmp_path / "data" / "training" / "4" / "pre" / "reg_IR.nii.gz").is_file()
    assert main(["synthesize", "--dataset", "cifar", "--output_dir", str(tmp_path)]) == 2
    assert "unknown dataset 'cifar'" in capsys.readouterr().err


def test_error_shown_is_the_one_under_monai_bundle_wrappers_not_its_low_level_cause():
    from medunlearn_monai.cli import _root_cause

    try:
        try:
            try:
                raise EOFError("Compressed file ended")
            except EOFError as low_level:
                raise ValueError("data/training/4/pre/reg_T1.nii.gz: unreadable NIfTI") from low_level
        except ValueError as ours:
            raise RuntimeError("Failed to evaluate ConfigExpression: '$validate(...)'") from ours
    except RuntimeError as wrapped:
        assert str(_root_cause(wrapped)) == "data/training/4/pre/reg_T1.nii.gz: unreadable NIfTI"
