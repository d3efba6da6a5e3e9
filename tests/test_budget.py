"""Unlearning's own epoch budget: apart from training's, logged beside it, and a warning when it costs as much."""

from __future__ import annotations

import logging

import monai
import pytest

from medunlearn_monai.budget import trained_epochs, warn_if_as_costly_as_training
from medunlearn_monai.records import record_path, write_json
from medunlearn_monai.workflows import config_files, strategies

BUNDLES = ("tissuemnist_resnet_classification", "chexpert_resnet_classification", "mrbrains18_med3d_segmentation")
UNLEARNING = [
    (bundle, strategy)
    for bundle in BUNDLES
    for strategy in strategies(bundle)
    if strategy != "sisa"  # SISA retrains shards with the training budget
]


@pytest.mark.parametrize(("bundle", "strategy"), UNLEARNING)
def test_training_arguments_reused_for_unlearning_do_not_set_its_epochs(bundle, strategy):
    parser = monai.bundle.ConfigParser()
    parser.read_config(config_files(bundle, "unlearn", strategy))
    parser.update({"max_epochs": 999})  # what a user who trained with --max_epochs 999 passes again
    epochs = parser.get_parsed_content("unlearn_epochs")
    assert epochs != 999
    assert parser.get_parsed_content("train#trainer#max_epochs") == epochs
    # logged to MLflow and recorded beside the source model's training epochs, tuned or not
    assert parser["run_params"]["unlearn_epochs"] == "@unlearn_epochs"
    assert parser["run_params"]["trained_epochs"] == "$budget.trained_epochs(@source_model)"
    parser.update({"unlearn_epochs": 2})
    assert parser.get_parsed_content("train#trainer#max_epochs", lazy=False) == 2


def test_the_source_models_training_epochs_come_from_its_record(tmp_path):
    model = tmp_path / "model.pt"
    assert trained_epochs(model) is None  # no record: a model made elsewhere
    write_json(record_path(model), {"workflow": "train", "max_epochs": 12})
    assert trained_epochs(model) == 12


@pytest.mark.parametrize(("unlearn_epochs", "warned"), [(11, False), (12, True), (30, True)])
def test_unlearning_as_long_as_training_is_warned_about(tmp_path, caplog, unlearn_epochs, warned):
    model = tmp_path / "model.pt"
    write_json(record_path(model), {"workflow": "train", "max_epochs": 12})
    with caplog.at_level(logging.WARNING, logger="medunlearn_monai.budget"):
        warn_if_as_costly_as_training(unlearn_epochs, model)
    assert ("costs about as much as exact retraining" in caplog.text) is warned
