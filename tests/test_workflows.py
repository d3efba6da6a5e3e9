import logging
from pathlib import Path

import pytest

from medunlearn_monai.workflows import bundle_dir, config_files, config_value, strategies

BUNDLE = "tissuemnist_resnet_classification"


def test_config_lists_layer_shared_keys_then_overrides():
    names = lambda files: [Path(path).relative_to(bundle_dir(BUNDLE) / "configs").as_posix() for path in files]  # noqa: E731
    assert names(config_files(BUNDLE, "train")) == ["common.json", "train.json"]
    assert names(config_files(BUNDLE, "evaluate")) == ["common.json", "train.json", "evaluate.json"]
    assert names(config_files(BUNDLE, "unlearn", "salun")) == [
        "common.json",
        "train.json",
        "unlearn.json",
        "strategies/salun.json",
    ]
    assert names(config_files(BUNDLE, "inference")) == ["inference.json"]
    sisa = ["common.json", "train.json", "sisa.json"]
    assert names(config_files(BUNDLE, "unlearn", "sisa")) == [*sisa, "sisa_unlearn.json"]
    assert names(config_files(BUNDLE, "evaluate", "sisa")) == [*sisa, "evaluate.json", "sisa_evaluate.json"]


def test_multi_gpu_overrides_come_last_for_train_and_unlearn_only():
    assert Path(config_files(BUNDLE, "train", multi_gpu=True)[-1]).name == "multi_gpu_train.json"
    assert config_files(BUNDLE, "unlearn", "salun", multi_gpu=True) == [
        *config_files(BUNDLE, "unlearn", "salun"),
        str(bundle_dir(BUNDLE) / "configs" / "multi_gpu_unlearn.json"),
    ]
    with pytest.raises(ValueError, match="multi_gpu applies to train and unlearn, not to evaluate"):
        config_files(BUNDLE, "evaluate", multi_gpu=True)


def test_bundle_ships_its_strategies():
    assert strategies(BUNDLE) == [
        "ft", "ga", "l1_sparse", "neggrad_plus", "rl", "rl_stop", "rum", "salun", "salun_stop", "scrub", "ssd",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("workflow", "strategy", "message"),
    [
        ("deploy", None, "unknown workflow"),
        ("unlearn", None, "unlearn needs --strategy"),
        ("unlearn", "magic", "one of ft, ga"),
        ("train", "rl", "applies to unlearn only"),
    ],
)
def test_bad_workflow_choices_fail_clearly(workflow, strategy, message):
    with pytest.raises(ValueError, match=message):
        config_files(BUNDLE, workflow, strategy)


def test_unknown_bundle_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match=BUNDLE):
        bundle_dir("no_such_bundle")


def test_one_name_per_algorithm_and_max_loss_is_an_alias_that_logs_neggrad_plus(caplog):
    segmentation = "mrbrains18_med3d_segmentation"
    assert "neggrad_plus" in strategies(segmentation) and "max_loss" not in strategies(segmentation)
    assert "salun" in strategies(segmentation)
    with caplog.at_level(logging.INFO, logger="medunlearn_monai.workflows"):
        files = config_files(segmentation, "unlearn", "max_loss")
    assert files == config_files(segmentation, "unlearn", "neggrad_plus")
    assert "'max_loss' is another name for 'neggrad_plus'" in caplog.text
    assert config_value(segmentation, "strategy", "unlearn", "max_loss") == "neggrad_plus"
    shared = set(strategies(segmentation)) & set(strategies(BUNDLE))
    assert {"ft", "ga", "neggrad_plus", "salun", "scrub", "ssd", "l1_sparse"} <= shared
