import copy

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines.utils import IterationEvents
from monai.losses import FocalLoss

from medunlearn_monai.losses import MaskedBCEWithLogitsLoss
from medunlearn_monai.strategies import Scrub

from .conftest import NUM_CLASSES, flagged_items, segmentation_items, small_network


def frozen_copy(network: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(network).eval().requires_grad_(False)


def softmax_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-item T^2 * sum_c p_t (log p_t - log p_s), averaged over any voxels."""
    p_teacher = torch.softmax(teacher / temperature, dim=1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / temperature, dim=1))).sum(dim=1)
    return kl.reshape(len(kl), -1).mean(dim=1) * temperature**2


def bernoulli_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-item T^2 * mean over observations of p log(p/q) + (1-p) log((1-p)/(1-q))."""
    p, q = torch.sigmoid(teacher / temperature), torch.sigmoid(student / temperature)
    kl = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    return kl.mean(dim=1) * temperature**2


def expected_loss(kl, ce, forget, max_step, kl_weight, ce_weight):
    forget_part = -kl[forget].sum() if max_step else 0.0
    return (forget_part + (kl_weight * kl[~forget] + ce_weight * ce[~forget]).sum()) / len(kl)


def test_loss_is_max_step_then_min_step_only_by_hand(make_trainer):
    scrub = Scrub(max_steps_epochs=1, kl_weight=0.5, ce_weight=2.0, temperature=3.0)
    trainer = make_trainer(handlers=[scrub], epochs=2, lr=0.05)
    teacher = frozen_copy(trainer.network)
    checked = []

    def check(engine):
        output = engine.state.output
        kl = softmax_kl(output["pred"].detach(), teacher(output["image"]), 3.0)
        ce = torch.nn.functional.cross_entropy(output["pred"].detach(), output["label"], reduction="none")
        forget = engine.state.batch["forget"].bool()
        max_step = engine.state.epoch == 1
        expected = expected_loss(kl, ce, forget, max_step, 0.5, 2.0)
        assert output["loss"].item() == pytest.approx(float(expected), rel=1e-5, abs=1e-7)
        checked.append((engine.state.epoch, kl[forget].sum().item()))

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert [epoch for epoch, _ in checked] == [1] * 4 + [2] * 4
    assert all(forget_kl_sum > 0 for _, forget_kl_sum in checked)  # the max-step term is not trivially 0


def forget_kl(student: torch.nn.Module, teacher: torch.nn.Module, items: list[dict]) -> float:
    images = torch.stack([item["image"] for item in items if item["forget"]])
    student.eval()
    with torch.no_grad():
        return softmax_kl(student(images), teacher(images), 4.0).mean().item()


def test_max_steps_raise_the_forget_kl_epoch_after_epoch(make_trainer):
    items = flagged_items()
    trainer = make_trainer(items=items, handlers=[Scrub(max_steps_epochs=3)], epochs=3, lr=0.1)
    teacher = frozen_copy(trainer.network)
    kls = [forget_kl(trainer.network, teacher, items)]
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: kls.append(forget_kl(trainer.network, teacher, items)))
    trainer.run()
    assert kls[0] == pytest.approx(0.0, abs=1e-6)
    assert kls[1] < kls[2] < kls[3]
    # The retain terms alone move the student too (cross-entropy, batch-norm statistics): max-steps add to that.
    min_steps_only = make_trainer(items=items, handlers=[Scrub(max_steps_epochs=0)], epochs=3, lr=0.1)
    min_steps_only.run()
    assert kls[3] > 1.5 * forget_kl(min_steps_only.network, teacher, items)


def test_forget_items_contribute_nothing_after_the_max_steps(make_trainer):
    forget_only = [{**item, "forget": 1} for item in flagged_items()]
    trainer = make_trainer(items=forget_only, handlers=[Scrub(max_steps_epochs=1)], epochs=2, lr=0.05)
    losses, snapshots = [], []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: snapshots.append([p.detach().clone() for p in e.network.parameters()])
    )
    trainer.run()
    assert all(loss < 0 for loss in losses[:4]) and losses[4:] == [0.0] * 4
    assert all(torch.equal(after, before) for before, after in zip(*snapshots, strict=True))


class LoadAtStart:
    """Loads weights into the network when the run starts, like SafeCheckpointLoader or a resuming RunCheckpointer."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda engine: engine.network.load_state_dict(self.state))


def test_teacher_is_the_network_as_loaded_at_start_and_stays_frozen(make_trainer):
    torch.manual_seed(1)
    source = {
        name: torch.rand_like(value.float()).to(value.dtype) for name, value in small_network().state_dict().items()
    }
    resumed = {name: value + 1 for name, value in source.items()}
    scrub = Scrub(max_steps_epochs=1)
    handlers = [LoadAtStart(source), scrub, LoadAtStart(resumed)]
    trainer = make_trainer(handlers=handlers, epochs=2, lr=0.1, momentum=0.9, weight_decay=0.01)
    trainer.run()
    assert not scrub.teacher.training
    assert not any(parameter.requires_grad for parameter in scrub.teacher.parameters())
    teacher_state = scrub.teacher.state_dict()
    assert all(torch.equal(teacher_state[name], value) for name, value in source.items())
    assert not torch.equal(trainer.network.state_dict()["4.weight"], resumed["4.weight"])  # the student learnt


def test_multilabel_kl_is_bernoulli_per_observation_and_ignores_unknown_labels(make_trainer):
    generator = torch.Generator().manual_seed(1)
    items = []
    for item in flagged_items():
        label = torch.randint(0, 2, (NUM_CLASSES,), generator=generator).float()
        label[torch.rand(NUM_CLASSES, generator=generator) < 0.3] = float("nan")
        items.append({**item, "label": label})
    trainer = make_trainer(items=items, handlers=[Scrub(max_steps_epochs=1, multilabel=True)], epochs=2, lr=0.05)
    trainer.loss_function = MaskedBCEWithLogitsLoss()
    teacher = frozen_copy(trainer.network)
    checked = []

    def check(engine):
        output = engine.state.output
        kl = bernoulli_kl(output["pred"].detach(), teacher(output["image"]), 4.0)
        known = ~torch.isnan(output["label"])
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            output["pred"].detach(), output["label"].nan_to_num(), reduction="none"
        )
        ce = (bce * known).mean(dim=1)
        forget = engine.state.batch["forget"].bool()
        expected = expected_loss(kl, ce, forget, engine.state.epoch == 1, 1.0, 1.0)
        assert torch.isfinite(output["loss"])
        assert output["loss"].item() == pytest.approx(float(expected), rel=1e-5, abs=1e-7)
        checked.append(True)

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert len(checked) == 8


def test_segmentation_kl_is_over_classes_averaged_over_voxels(make_seg_trainer):
    trainer = make_seg_trainer(handlers=[Scrub(max_steps_epochs=1, kl_weight=2.0, temperature=2.0)], epochs=1)
    trainer.loss_function = FocalLoss(gamma=0.0, use_softmax=True, to_onehot_y=True, reduction="none")
    teacher = frozen_copy(trainer.network)
    checked = []

    def check(engine):
        output = engine.state.output
        kl = softmax_kl(output["pred"].detach(), teacher(output["image"]), 2.0)
        log_p = torch.log_softmax(output["pred"].detach(), dim=1)
        voxel_ce = -log_p.gather(1, output["label"].long()).squeeze(1)
        ce = voxel_ce.reshape(len(voxel_ce), -1).mean(dim=1) / log_p.shape[1]  # FocalLoss: mean over classes too
        forget = engine.state.batch["forget"].bool()
        expected = expected_loss(kl, ce, forget, True, 2.0, 1.0)
        assert output["loss"].item() == pytest.approx(float(expected), rel=1e-5, abs=1e-7)
        checked.append(True)

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert len(checked) == len(DataLoader(segmentation_items(), batch_size=8))


def test_scalar_loss_is_refused_with_a_fix(make_trainer):
    trainer = make_trainer(handlers=[Scrub()])
    trainer.loss_function = torch.nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="reduction='none'"):
        trainer.run()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"max_steps_epochs": -1}, ValueError, "max_steps_epochs must not be negative"),
        ({"max_steps_epochs": 1.5}, TypeError, "max_steps_epochs must be an integer"),
        ({"max_steps_epochs": True}, TypeError, "max_steps_epochs must be an integer"),
        ({"kl_weight": -0.1}, ValueError, "must not be negative"),
        ({"ce_weight": -1.0}, ValueError, "must not be negative"),
        ({"kl_weight": 0.0, "ce_weight": 0.0}, ValueError, "both 0"),
        ({"temperature": 0.0}, ValueError, "temperature must be a positive number"),
        ({"temperature": float("inf")}, ValueError, "temperature must be a positive number"),
    ],
)
def test_invalid_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        Scrub(**arguments)
