from pathlib import Path

import pytest

from medunlearn_monai.workflows import bundle_dir, config_files, strategies

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


def test_bundle_ships_the_five_strategies():
    assert strategies(BUNDLE) == ["ft", "ga", "neggrad_plus", "rl", "salun"]


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
