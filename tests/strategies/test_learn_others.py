import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader

from medunlearn_monai.strategies import LearnOthers

from .conftest import segmentation_items


def test_forget_maps_become_donor_maps_in_order_cycling_a_short_donor_loader(make_seg_trainer):
    items = segmentation_items()
    originals = [item["label"].clone() for item in items]
    donors = [item for item in items if not item["forget"]][:3]
    donor_maps = [donor["label"].clone() for donor in donors]
    # 3 donors in batches of 2 (the last one short) serve 8 forget items per epoch: the loader must cycle.
    learn_others = LearnOthers(DataLoader(donors, batch_size=2, shuffle=False))
    trainer = make_seg_trainer(items=items, handlers=[learn_others], epochs=2)
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda engine: seen.append(dict(engine.state.batch)))
    trainer.run()
    used = 0
    for iteration, batch in enumerate(seen):
        start = (iteration % 4) * 8
        true_maps = torch.stack(originals[start : start + 8])
        forget = batch["forget"].bool()
        assert torch.equal(batch["label"][~forget], true_maps[~forget])
        for label in batch["label"][forget]:
            assert torch.equal(label, donor_maps[used % 3])
            used += 1
    assert used == 2 * 8
    for item, original in zip(items, originals, strict=True):
        assert torch.equal(item["label"], original)


def test_batch_is_replaced_not_modified_in_place():
    items = segmentation_items(count=4, forget_every=2)
    labels = torch.stack([item["label"] for item in items])
    batch = {"label": labels, "forget": torch.tensor([1, 0, 1, 0])}
    before = labels.clone()
    donor = {"label": torch.full((1, 1, 4, 4, 4), 7)}
    engine = Engine(lambda engine, batch: None)
    engine.state.batch = batch
    LearnOthers([donor])(engine)
    assert torch.equal(batch["label"], before)
    swapped = engine.state.batch["label"]
    assert (swapped[[0, 2]] == 7).all() and torch.equal(swapped[[1, 3]], before[[1, 3]])


def test_empty_donor_loader_is_a_clear_error(make_seg_trainer):
    trainer = make_seg_trainer(handlers=[LearnOthers(DataLoader([], batch_size=2))])
    with pytest.raises(ValueError, match="donor_loader yielded no items"):
        trainer.run()
    one_shot = LearnOthers(iter([{"label": torch.zeros(2, 1, 4, 4, 4)}]))
    with pytest.raises(ValueError, match="re-iterable"):
        make_seg_trainer(handlers=[one_shot]).run()  # 8 forget items, the one-shot iterator holds 2


def test_donor_crop_of_another_size_is_a_clear_error(make_seg_trainer):
    donors = [item for item in segmentation_items(size=6) if not item["forget"]]
    trainer = make_seg_trainer(handlers=[LearnOthers(DataLoader(donors, batch_size=4))])
    with pytest.raises(ValueError, match=r"\(1, 6, 6, 6\) differs .* \(1, 4, 4, 4\).*share a spatial size"):
        trainer.run()


def test_donor_batches_need_the_label_key():
    with pytest.raises(TypeError, match="iterable"):
        LearnOthers(3)
    engine = Engine(lambda engine, batch: None)
    engine.state.batch = {"label": torch.zeros(1, 1, 2, 2, 2), "forget": torch.tensor([1])}
    with pytest.raises(KeyError, match="no 'label' key"):
        LearnOthers([{"seg": torch.zeros(1, 1, 2, 2, 2)}])(engine)
