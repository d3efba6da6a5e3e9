import pytest
import torch
from ignite.engine import Engine, Events

from medunlearn_monai.strategies import NoisyLabel

from .conftest import SEG_CLASSES, segmentation_items


def run_and_record(trainer) -> list[dict]:
    """Run the trainer, recording each batch as the strategies left it (handlers attached later run later)."""
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda engine: seen.append(dict(engine.state.batch)))
    trainer.run()
    return seen


@pytest.mark.parametrize("noise_fraction", [0.25, 1.0])
def test_forget_maps_get_noise_at_the_expected_rate_and_retain_maps_and_the_dataset_stay(
    make_seg_trainer, noise_fraction
):
    items = segmentation_items(size=8)
    originals = [item["label"].clone() for item in items]
    noisy_label = NoisyLabel(SEG_CLASSES, noise_fraction=noise_fraction, seed=1)
    seen = run_and_record(make_seg_trainer(items=items, handlers=[noisy_label], epochs=3))
    changed = total = 0
    for iteration, batch in enumerate(seen):
        start = (iteration % 4) * 8  # 32 items in order, batches of 8
        true_maps = torch.stack(originals[start : start + 8])
        forget = batch["forget"].bool()
        labels = batch["label"]
        assert torch.equal(labels[~forget], true_maps[~forget])
        assert ((labels >= 0) & (labels < SEG_CLASSES)).all()
        changed += int((labels[forget] != true_maps[forget]).sum())
        total += true_maps[forget].numel()
    expected = noise_fraction * (1 - 1 / SEG_CLASSES)
    assert total == 3 * 8 * 8**3  # 8 forget items of 8^3 voxels, 3 epochs
    assert abs(changed / total - expected) < 0.03  # ~7 standard deviations at this sample size
    for item, original in zip(items, originals, strict=True):
        assert torch.equal(item["label"], original)


def test_batch_is_replaced_not_modified_in_place():
    items = segmentation_items(count=4, forget_every=2)
    labels = torch.stack([item["label"] for item in items])
    batch = {
        "image": torch.stack([item["image"] for item in items]),
        "label": labels,
        "forget": torch.tensor([1, 0, 1, 0]),
    }
    before = labels.clone()
    engine = Engine(lambda engine, batch: None)
    engine.state.batch = batch
    NoisyLabel(SEG_CLASSES)(engine)
    assert torch.equal(batch["label"], before)
    assert engine.state.batch is not batch and engine.state.batch["label"] is not labels
    assert not torch.equal(engine.state.batch["label"][0], before[0])


def test_noise_is_fresh_each_epoch_and_reproducible_from_the_seed(make_seg_trainer):
    def forget_maps(seed: int) -> list[torch.Tensor]:
        trainer = make_seg_trainer(handlers=[NoisyLabel(SEG_CLASSES, seed=seed)], epochs=2, batch_size=32)
        return [batch["label"][batch["forget"].bool()] for batch in run_and_record(trainer)]

    first, again, other = forget_maps(seed=3), forget_maps(seed=3), forget_maps(seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # the same items, seen in two epochs, get different noise
    assert not torch.equal(first[0], other[0])


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="at least 2"):
        NoisyLabel(1)
    with pytest.raises(TypeError, match="integer"):
        NoisyLabel(2.5)
    for fraction in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"\(0, 1\], got {fraction}"):
            NoisyLabel(SEG_CLASSES, noise_fraction=fraction)
