import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines.utils import IterationEvents

from medunlearn_monai.metrics.membership_inference import true_class_confidence
from medunlearn_monai.strategies import GradientAscent, MemorisationRefinement, RandomRelabel
from medunlearn_monai.strategies._state import NoRunState

from .conftest import flagged_items


def subject_items():
    """32 items, one subject each; every 4th is a forget item (8 forget subjects)."""
    return [{**item, "subject": f"s{index:02d}"} for index, item in enumerate(flagged_items())]


def forget_loader(items):
    return DataLoader([item for item in items if item["forget"]], batch_size=8)


class Recorder(NoRunState):
    """A strategy handler that records the forget subjects of the batches it acts on, and its STARTED calls."""

    def __init__(self):
        self.subjects: list[str] = []
        self.started = 0

    def attach(self, engine):
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def start(self, engine):
        self.started += 1

    def __call__(self, engine):
        batch = engine.state.batch
        self.subjects += [
            subject for subject, flag in zip(batch["subject"], batch["forget"].tolist(), strict=True) if flag
        ]


def test_groups_cut_subjects_from_most_to_least_confident(make_trainer):
    items = subject_items()
    refinement = MemorisationRefinement(forget_loader(items), [[], [], []])
    trainer = make_trainer(items=items, handlers=[refinement], epochs=3)
    forget = [item for item in items if item["forget"]]
    with torch.no_grad():
        probabilities = torch.softmax(trainer.network(torch.stack([item["image"] for item in forget])), dim=1)
    confidence = true_class_confidence(probabilities, torch.tensor([item["label"] for item in forget]))
    ranked = [forget[index]["subject"] for index in np.argsort(-confidence, kind="stable")]
    groups = refinement.memorisation_groups(trainer)
    assert [groups[subject] for subject in ranked] == [0, 0, 0, 1, 1, 1, 2, 2]  # 8 subjects: sizes 3, 3, 2


def test_each_phase_sees_retain_items_and_only_its_groups_forget_items(make_trainer):
    items = subject_items()
    recorders = [Recorder(), Recorder(), Recorder()]
    refinement = MemorisationRefinement(forget_loader(items), [[], [recorders[1]], [recorders[2]]], epochs_per_group=2)
    trainer = make_trainer(items=items, handlers=[refinement], epochs=6)
    retain_per_epoch, forget_per_epoch = {}, {}

    def count(engine):
        flags = engine.state.batch["forget"].bool().tolist()
        epoch = engine.state.epoch
        retain_per_epoch[epoch] = retain_per_epoch.get(epoch, 0) + flags.count(False)
        forget_per_epoch.setdefault(epoch, []).extend(
            subject for subject, flag in zip(engine.state.batch["subject"], flags, strict=True) if flag
        )

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, count)
    trainer.run()
    groups = refinement.groups
    assert all(retain_per_epoch[epoch] == 24 for epoch in range(1, 7))  # every retain item, every epoch
    assert forget_per_epoch.get(1, []) == forget_per_epoch.get(2, []) == []  # no handlers: group 0 left out
    for group, epochs in ((1, (3, 4)), (2, (5, 6))):
        members = sorted(subject for subject, index in groups.items() if index == group)
        for epoch in epochs:
            assert sorted(forget_per_epoch[epoch]) == members
        assert sorted(recorders[group].subjects) == sorted(members * 2)  # its handler acted in its phase only
        assert recorders[group].started == 1  # run-level events reach every group's handlers


def test_group_strategy_changes_the_loss_only_in_its_phase(make_trainer):
    items = subject_items()
    refinement = MemorisationRefinement(forget_loader(items), [[], [GradientAscent(retain_weight=1.0)]])
    trainer = make_trainer(items=items, handlers=[refinement], epochs=2)
    signs = {}

    def check(engine):
        output = engine.state.output
        per_item = torch.nn.functional.cross_entropy(output["pred"], output["label"], reduction="none")
        forget = engine.state.batch["forget"].bool()
        if forget.any():
            expected = (per_item[~forget].sum() - per_item[forget].sum()) / len(per_item)
            assert output["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
            signs[engine.state.epoch] = True

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert signs == {2: True}  # group 0 (no handlers) left its items out; group 1's ascent acted in epoch 2


def test_label_generators_are_checkpointed():
    relabel = RandomRelabel(4, seed=3)
    refinement = MemorisationRefinement([], [[], [relabel]])
    state = refinement.state_dict()
    before = torch.randint(0, 100, (5,), generator=relabel.generator)
    refinement.load_state_dict(state)
    assert torch.equal(torch.randint(0, 100, (5,), generator=relabel.generator), before)


def test_a_group_handler_that_cannot_save_its_state_is_refused():
    class DrawsWithoutSaving:
        def attach(self, engine):
            pass

    with pytest.raises(TypeError, match="group 1's DrawsWithoutSaving has no state_dict/load_state_dict"):
        MemorisationRefinement([], [[RandomRelabel(4)], [DrawsWithoutSaving()]])


def test_epochs_must_match_the_phases(make_trainer):
    items = subject_items()
    trainer = make_trainer(items=items, handlers=[MemorisationRefinement(forget_loader(items), [[], []])], epochs=3)
    with pytest.raises(ValueError, match="max_epochs = 2"):
        trainer.run()


def test_a_forget_only_loader_is_refused(make_trainer):
    items = [{**item, "forget": 1} for item in subject_items()]
    refinement = MemorisationRefinement(forget_loader(items), [[GradientAscent(retain_weight=0.0)], []])
    trainer = make_trainer(items=items, handlers=[refinement], epochs=2)
    with pytest.raises(ValueError, match="retain items"):
        trainer.run()


@pytest.mark.parametrize(("groups", "epochs"), [([], 1), ([[]], 0)])
def test_invalid_arguments(groups, epochs):
    with pytest.raises(ValueError):
        MemorisationRefinement([], groups, epochs_per_group=epochs)
