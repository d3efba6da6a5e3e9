import pytest
import torch
from monai.data import DataLoader

from medunlearn_monai.strategies import RandomRelabel, StopBeforeOverForgetting

from .conftest import NUM_CLASSES, flagged_items


def loaders(items):
    """Forget items of ``items``, and held-out items (never trained on) as the reference."""
    generator = torch.Generator().manual_seed(1)
    held_out = [
        {"image": torch.randn(1, 6, 6, generator=generator), "label": index % NUM_CLASSES, "forget": 0}
        for index in range(16)
    ]
    forget = [item for item in items if item["forget"]]
    return DataLoader(forget, batch_size=8), DataLoader(held_out, batch_size=8)


def test_target_is_the_loaded_models_reference_accuracy(make_trainer):
    items = flagged_items()
    forget, reference = loaders(items)
    stopper = StopBeforeOverForgetting(forget, reference, min_epochs=5)
    trainer = make_trainer(items=items, handlers=[stopper], epochs=1)
    with torch.no_grad():
        logits = torch.cat([trainer.network(batch["image"]) for batch in reference])
        labels = torch.cat([batch["label"] for batch in reference])
    expected = (logits.argmax(dim=1) == labels).float().mean().item()
    trainer.run()
    assert stopper.target == pytest.approx(expected)
    assert stopper.history == []  # min_epochs not reached: never measured, never stopped
    assert stopper.stopped_at is None


def test_relabelling_run_stops_at_the_first_measurement_at_or_below_the_target(make_trainer):
    # Memorise the data first, then relabel the forget items: forget accuracy falls and the run must end
    # at the first measurement that reaches the target, long before max_epochs.
    items = flagged_items()
    trainer = make_trainer(items=items, lr=0.2, epochs=40)
    trainer.run()
    forget, reference = loaders(items)
    stopper = StopBeforeOverForgetting(forget, reference, min_epochs=1, interval=1)
    relabel = make_trainer(items=items, handlers=[RandomRelabel(NUM_CLASSES), stopper], lr=0.01, epochs=40)
    relabel.network.load_state_dict(trainer.network.state_dict())
    memorised = stopper.loader_accuracy(relabel, forget)
    relabel.run()
    accuracies = [value for _, value in stopper.history]
    assert stopper.stopped_at is not None and stopper.stopped_at < 40 * len(relabel.state.dataloader)
    assert memorised > stopper.target + 0.25  # memorised forget items start far above unseen data
    assert accuracies[-1] <= stopper.target
    assert len(accuracies) >= 2 and all(value > stopper.target for value in accuracies[:-1])
    assert stopper.history[0][0] == len(relabel.state.dataloader)  # first measurement after min_epochs = 1
    assert relabel.state.iteration == stopper.stopped_at


def test_network_mode_is_restored_after_a_measurement(make_trainer):
    items = flagged_items()
    forget, reference = loaders(items)
    stopper = StopBeforeOverForgetting(forget, reference, min_epochs=0)
    trainer = make_trainer(items=items, handlers=[stopper], epochs=1)
    trainer.network.eval()
    with torch.no_grad():
        logits = torch.cat([trainer.network(batch["image"]) for batch in forget])
        labels = torch.cat([batch["label"] for batch in forget])
    expected = (logits.argmax(dim=1) == labels).float().mean().item()  # measured in eval mode
    trainer.network.train()
    assert stopper.loader_accuracy(trainer, forget) == pytest.approx(expected)
    assert trainer.network.training


def test_a_resumed_run_keeps_the_saved_target():
    stopper = StopBeforeOverForgetting([], [], min_epochs=0)
    stopper.load_state_dict({"target": 0.25})
    stopper(None)  # a resumed run's STARTED must not re-measure the target on a half-unlearned model
    assert stopper.state_dict() == {"target": 0.25}


@pytest.mark.parametrize(("min_epochs", "interval"), [(-1, None), (1, 0)])
def test_invalid_arguments(min_epochs, interval):
    with pytest.raises(ValueError):
        StopBeforeOverForgetting([], [], min_epochs=min_epochs, interval=interval)
