import pytest
import torch
from ignite.engine import Events

from medunlearn_monai.strategies import RandomRelabel

from .conftest import NUM_CLASSES, flagged_items


def test_forget_items_get_a_different_label_and_retain_items_keep_theirs(make_trainer):
    items = flagged_items()
    trainer = make_trainer(items=items, handlers=[RandomRelabel(NUM_CLASSES, seed=1)], epochs=3)
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda engine: seen.append(dict(engine.state.batch)))
    trainer.run()
    changed = 0
    for batch in seen:
        original = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # labels are index % 4 and batches are in order
        forget = batch["forget"].bool()
        assert torch.equal(batch["label"][~forget], original[~forget])
        assert (batch["label"][forget] != original[forget]).all()
        assert ((batch["label"] >= 0) & (batch["label"] < NUM_CLASSES)).all()
        changed += int(forget.sum())
    assert changed == 3 * sum(item["forget"] for item in items)


def test_without_forget_flag_the_error_says_how_to_build_the_data(make_trainer):
    items = [{key: value for key, value in item.items() if key != "forget"} for item in flagged_items()]
    trainer = make_trainer(items=items, handlers=[RandomRelabel(NUM_CLASSES)])
    with pytest.raises(KeyError, match="ForgetSplit.flagged"):
        trainer.run()


def test_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2"):
        RandomRelabel(1)
