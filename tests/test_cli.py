from medunlearn_monai.cli import format_table, main


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


def test_errors_become_one_message_and_exit_code_two(capsys):
    assert main(["run", "tissuemnist_resnet_classification", "unlearn", "--strategy", "magic"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "medunlearn: error: ValueError: unlearn needs --strategy, one of ft, ga, neggrad_plus, rl, salun; got 'magic'."
    ]


def test_compare_of_missing_experiment_fails_cleanly(capsys):
    assert main(["compare", "--experiment", "absent"]) == 2
    assert "'absent' does not exist" in capsys.readouterr().err
