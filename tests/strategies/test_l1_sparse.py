import pytest
from monai.engines.utils import IterationEvents

from medunlearn_monai.strategies import L1Sparse

from .conftest import flagged_items


def retain_items() -> list[dict]:
    return [item for item in flagged_items() if not item["forget"]]


def test_penalty_is_gamma_t_times_the_l1_norm_decaying_linearly_to_exactly_zero(make_trainer):
    l1 = L1Sparse(l1_weight=0.01)
    plain, recorded = [], []

    def before(engine):
        plain.append(engine.state.output["loss"].detach().clone())

    def after(engine):
        norm = sum(parameter.detach().abs().sum() for parameter in engine.network.parameters())
        recorded.append((engine.state.output["loss"].detach() - plain[-1], norm))

    trainer = make_trainer(items=retain_items(), epochs=3, batch_size=8)  # 24 items: 3 iterations an epoch
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, before)
    l1.attach(trainer)
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, after)
    trainer.run()
    total = 9
    assert len(recorded) == total
    for step, (penalty, norm) in enumerate(recorded, start=1):
        gamma = 0.01 * (total - step) / (total - 1)
        assert penalty.item() == pytest.approx(gamma * norm.item(), rel=1e-4), step
    assert recorded[0][0].item() == pytest.approx(0.01 * recorded[0][1].item(), rel=1e-4)
    assert recorded[-1][0].item() == 0.0


def test_the_weight_is_l1_weight_at_the_first_step_and_exactly_zero_at_the_last(make_trainer):
    l1 = L1Sparse(l1_weight=5e-4)
    weights = []
    trainer = make_trainer(items=retain_items(), handlers=[l1], epochs=7, batch_size=5)  # 5 iterations an epoch
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda engine: weights.append(l1.weight(engine)))
    trainer.run()
    assert len(weights) == 35 and weights[0] == 5e-4 and weights[-1] == 0.0
    steps = [earlier - later for earlier, later in zip(weights, weights[1:], strict=False)]
    assert steps == pytest.approx([5e-4 / 34] * 34)


def test_a_one_iteration_run_keeps_the_full_weight(make_trainer):
    l1 = L1Sparse(l1_weight=0.1)
    weights = []
    trainer = make_trainer(items=retain_items(), handlers=[l1], epochs=1, batch_size=32)
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda engine: weights.append(l1.weight(engine)))
    trainer.run()
    assert weights == [0.1]


def test_the_penalty_makes_the_weights_sparser_than_plain_fine_tuning(make_trainer):
    def l1_norm_after(handlers):
        trainer = make_trainer(items=retain_items(), handlers=handlers, epochs=3, lr=0.05)
        trainer.run()
        return sum(parameter.detach().abs().sum().item() for parameter in trainer.network.parameters())

    assert l1_norm_after([L1Sparse(l1_weight=0.01)]) < l1_norm_after([]) - 0.5


@pytest.mark.parametrize("l1_weight", [0.0, -1e-4, float("nan"), float("inf")])
def test_invalid_weights(l1_weight):
    with pytest.raises(ValueError, match="l1_weight must be a positive number"):
        L1Sparse(l1_weight)
