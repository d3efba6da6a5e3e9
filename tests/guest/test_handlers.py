"""The guest's file-writing handlers are disabled in its config; our checkpoints hold its learning-rate schedulers."""

from __future__ import annotations

import pytest
import torch
from guest_data import guest_bundle
from monai.bundle import ConfigParser
from monai.handlers import LrScheduleHandler, StatsHandler

from medunlearn_monai.guest.bundle import GuestBundle
from medunlearn_monai.guest.handlers import left_out_handlers
from medunlearn_monai.guest.training import checkpoint_objects, learning_rate


def test_spleen_keeps_its_schedule_validation_and_statistics_and_loses_its_file_writers():
    config = GuestBundle.open(guest_bundle("spleen_ct_segmentation")).config()
    overrides = left_out_handlers(config, ["train#handlers", "validate#handlers"])
    # train#handlers: LrScheduleHandler, ValidationHandler, StatsHandler, TensorBoardStatsHandler;
    # validate#handlers: StatsHandler, TensorBoardStatsHandler, CheckpointSaver.
    assert overrides == {
        "train#handlers#3#_disabled_": True,
        "validate#handlers#1#_disabled_": True,
        "validate#handlers#2#_disabled_": True,
    }


def test_template_loses_its_checkpoint_loader_savers_and_log_files():
    config = GuestBundle.open(guest_bundle("classification_template")).config()
    overrides = left_out_handlers(config, ["handlers", "val_handlers"])
    assert sorted(overrides) == [
        "handlers#1#_disabled_",  # CheckpointLoader of models/model.pt, when the bundle folder has one
        "handlers#3#_disabled_",  # CheckpointSaver
        "handlers#5#_disabled_",  # LogfileHandler
        "val_handlers#1#_disabled_",  # LogfileHandler
        "val_handlers#2#_disabled_",  # CheckpointSaver
    ]


def test_a_referenced_handler_is_disabled_where_it_is_defined():
    config = ConfigParser(
        {"saver": {"_target_": "monai.handlers.CheckpointSaver"}, "handlers": ["@saver", {"_target_": "StatsHandler"}]}
    )
    assert left_out_handlers(config, ["handlers"]) == {"saver#_disabled_": True}


def test_a_handler_list_built_by_an_expression_is_refused():
    with pytest.raises(ValueError, match="must be a list of handlers"):
        left_out_handlers(ConfigParser({"handlers": "$[]"}), ["handlers"])


def test_checkpoint_objects_hold_every_scheduler_of_the_guests_handlers():
    network = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.25)
    first = torch.optim.lr_scheduler.StepLR(optimizer, 2)
    second = torch.optim.lr_scheduler.StepLR(optimizer, 3)
    handlers = [LrScheduleHandler(first), StatsHandler(), LrScheduleHandler(second)]
    objects = checkpoint_objects(network, optimizer, handlers)
    assert objects == {"network": network, "optimizer": optimizer, "lr_scheduler": first, "lr_scheduler_1": second}
    assert learning_rate(optimizer) == 0.25
