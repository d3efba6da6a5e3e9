import pytest
import torch
from monai.engines.utils import IterationEvents

from medunlearn_monai.strategies import GradientAscent

from .conftest import flagged_items


def test_loss_is_retain_descent_minus_weighted_forget_ascent(make_trainer):
    trainer = make_trainer(handlers=[GradientAscent(forget_weight=0.5, retain_weight=2.0)])
    checked = []

    def check(engine):
        output = engine.state.output
        per_item = torch.nn.functional.cross_entropy(output["pred"], output["label"], reduction="none")
        forget = engine.state.batch["forget"].bool()
        expected = (2.0 * per_item[~forget].sum() - 0.5 * per_item[forget].sum()) / len(per_item)
        assert output["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
        checked.append(True)

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert len(checked) == 4


def test_pure_ascent_raises_the_forget_loss(make_trainer):
    forget_only = [{**item, "forget": 1} for item in flagged_items()]
    trainer = make_trainer(items=forget_only, handlers=[GradientAscent(retain_weight=0.0)], lr=0.05, epochs=3)
    losses = []
    trainer.add_event_handler(
        IterationEvents.LOSS_COMPLETED, lambda engine: losses.append(-engine.state.output["loss"].item())
    )
    trainer.run()
    assert sum(losses[-4:]) > sum(losses[:4])


def test_scalar_loss_is_refused_with_a_fix(make_trainer):
    trainer = make_trainer(handlers=[GradientAscent()])
    trainer.loss_function = torch.nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="reduction='none'"):
        trainer.run()


@pytest.mark.parametrize(("forget_weight", "retain_weight"), [(0.0, 1.0), (1.0, -1.0)])
def test_invalid_weights(forget_weight, retain_weight):
    with pytest.raises(ValueError):
        GradientAscent(forget_weight, retain_weight)
