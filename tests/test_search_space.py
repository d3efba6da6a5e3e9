"""The tuning search space: defaults per strategy, user ranges and fixed values, and clear errors."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from medunlearn_monai.search_space import (
    KNOWN_HYPERPARAMETERS,
    SearchSpaceError,
    build_search_space,
    parse_search,
)
from medunlearn_monai.workflows import BUNDLES_DIR

SALUN = ["learning_rate", "unlearn_epochs", "batch_size", "momentum", "weight_decay", "saliency_ratio"]
TRAINING_FREE = {"ssd"}  # strategies that edit the weights once, with no learning rate and no epochs


def test_defaults_search_the_learning_rate_epochs_and_the_strategys_own_knobs():
    space = build_search_space(SALUN)
    assert set(space.distributions) == {"learning_rate", "unlearn_epochs", "saliency_ratio"}
    assert space.distributions["learning_rate"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert isinstance(space.distributions["unlearn_epochs"], IntDistribution)
    assert space.fixed == {}


def test_a_user_range_keeps_the_default_scale_and_a_single_value_fixes():
    space = build_search_space(SALUN, {"learning_rate": [0.001, 0.1], "unlearn_epochs": 2, "momentum": [0.0, 0.5]})
    assert space.distributions["learning_rate"] == FloatDistribution(0.001, 0.1, log=True)
    assert space.distributions["momentum"] == FloatDistribution(0.0, 0.5)
    assert "unlearn_epochs" not in space.distributions and space.fixed == {"unlearn_epochs": 2}
    assert space.contains("learning_rate", 0.01) and not space.contains("learning_rate", 0.5)
    assert space.contains("unlearn_epochs", 2) and not space.contains("unlearn_epochs", 3)


def test_batch_size_entries_are_choices():
    space = build_search_space(SALUN, {"batch_size": [32, 64]})
    assert space.distributions["batch_size"] == CategoricalDistribution((32, 64))
    assert space.contains("batch_size", 64) and not space.contains("batch_size", 128)


def test_noise_modes_are_named_choices_searched_only_when_asked():
    noisy_label = ["learning_rate", "unlearn_epochs", "noise_fraction", "noise"]
    assert "noise" not in build_search_space(noisy_label).distributions
    space = build_search_space(noisy_label, {"noise": ["flip", "fixed"]})
    assert space.distributions["noise"] == CategoricalDistribution(("flip", "fixed"))
    assert build_search_space(noisy_label, {"noise": "flip"}).fixed == {"noise": "flip"}
    with pytest.raises(SearchSpaceError, match="'labels' is not one of fresh, fixed, flip, background"):
        build_search_space(noisy_label, {"noise": ["flip", "labels"]})


def test_the_search_text_of_the_command_line_parses_as_python_or_json():
    assert parse_search("{'learning_rate': [0.001, 0.1]}") == {"learning_rate": [0.001, 0.1]}
    assert parse_search('{"unlearn_epochs": 3}') == {"unlearn_epochs": 3}
    assert parse_search(None) == {}


def test_names_held_by_other_overrides_are_not_searched():
    space = build_search_space(SALUN, held=["unlearn_epochs"])
    assert set(space.distributions) == {"learning_rate", "saliency_ratio"}


def test_describe_names_every_range_and_fixed_value():
    described = build_search_space(SALUN, {"learning_rate": [0.001, 0.1], "unlearn_epochs": 2}).describe()
    assert described == {
        "learning_rate": "log-uniform [0.001, 0.1]",
        "saliency_ratio": "uniform [0.1, 0.9]",
        "unlearn_epochs": "fixed 2",
    }


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"warmup_epochs": [0.1, 1.0]}, "unknown hyperparameter 'warmup_epochs'"),
        ({"forget_weight": [0.5, 1.0]}, "strategy 'salun' does not declare 'forget_weight'"),
        ({"learning_rate": [0.1, 0.001]}, "low < high"),
        ({"weight_decay": [0.0, 0.01]}, "log scale"),
        ({"unlearn_epochs": [1.5, 4]}, "not an integer"),
        ({"saliency_ratio": [0.5, 2.0]}, "outside the values that make sense"),
        ({"learning_rate": "fast"}, "not a number"),
        ({"batch_size": [32, 32]}, "distinct choices"),
        ({"unlearn_epochs": True}, "not an integer"),
        ("[0.1, 0.2]", "must map hyperparameter names"),
        ("learning_rate=0.1", "not a mapping literal"),
    ],
)
def test_bad_search_spaces_fail_with_the_cause(search, message):
    with pytest.raises(SearchSpaceError, match=message):
        build_search_space(SALUN, search, strategy="strategy 'salun'")


def test_a_name_both_overridden_and_searched_is_refused():
    with pytest.raises(SearchSpaceError, match="set both by --unlearn_epochs and in --search"):
        build_search_space(SALUN, {"unlearn_epochs": [1, 3]}, held=["unlearn_epochs"])


def test_nothing_left_to_search_is_refused():
    with pytest.raises(SearchSpaceError, match="nothing to search"):
        build_search_space(["learning_rate", "batch_size"], {"learning_rate": 0.01})


def test_every_shipped_strategy_has_something_to_tune():
    import json

    for path in BUNDLES_DIR.glob("*/configs/strategies/*.json"):
        declared = json.loads(path.read_text()).get("hyperparameters")
        if declared is None:  # inherits train.json's learning rate and epochs
            continue
        if path.stem not in TRAINING_FREE:
            # RUM's epochs are its phases': groups x epochs_per_group
            assert "learning_rate" in declared and {"unlearn_epochs", "epochs_per_group"} & set(declared), path
        assert set(declared) - {"pretrained"} <= KNOWN_HYPERPARAMETERS.keys(), path
        assert build_search_space(declared).distributions, path
