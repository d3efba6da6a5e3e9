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


def test_multilabel_forget_items_get_a_different_uniform_label_vector():
    class Batch:
        batch: dict

    engine = type("Engine", (), {"state": Batch()})()
    labels = torch.tensor([[1.0, 0.0, 1.0]] * 4000)
    flags = torch.tensor([1, 0] * 2000)
    engine.state.batch = {"label": labels, "forget": flags}
    RandomRelabel(3, seed=0, multilabel=True)(engine)
    relabeled = engine.state.batch["label"]
    assert torch.equal(relabeled[1::2], labels[1::2]) and torch.equal(labels[0], torch.tensor([1.0, 0.0, 1.0]))
    forget = relabeled[0::2]
    assert ((forget == 0) | (forget == 1)).all() and (forget != labels[0::2]).any(dim=1).all()
    codes = (forget.long() * torch.tensor([1, 2, 4])).sum(dim=1)
    counts = torch.bincount(codes, minlength=8)
    assert counts[5] == 0 and (counts[[0, 1, 2, 3, 4, 6, 7]] > 2000 / 7 * 0.8).all()  # 101 = the true vector


def test_multilabel_unknown_labels_stay_unknown():
    class Batch:
        batch: dict

    engine = type("Engine", (), {"state": Batch()})()
    labels = torch.tensor([[1.0, float("nan"), 0.0]] * 50)
    engine.state.batch = {"label": labels, "forget": torch.ones(50)}
    RandomRelabel(3, seed=0, multilabel=True)(engine)
    relabeled = engine.state.batch["label"]
    assert torch.isnan(relabeled[:, 1]).all()
    assert ((relabeled[:, [0, 2]] == 0) | (relabeled[:, [0, 2]] == 1)).all()


def _relabel_batch(labels: torch.Tensor, flags: torch.Tensor, seed: int = 0) -> torch.Tensor:
    class Batch:
        batch: dict

    engine = type("Engine", (), {"state": Batch()})()
    engine.state.batch = {"label": labels, "forget": flags}
    RandomRelabel(labels.shape[1], seed=seed, multilabel=True)(engine)
    return engine.state.batch["label"]


def test_multilabel_relabel_always_changes_a_known_label():
    nan = float("nan")
    # One known label: the only other vector flips it, whatever the draw (a pattern of unknown bits only used to
    # leave 15 of 31 such items with their true label).
    one_known = _relabel_batch(torch.tensor([[nan, 1.0, nan, nan, nan]] * 200), torch.ones(200))
    assert torch.equal(one_known[:, 1], torch.zeros(200))
    assert torch.isnan(one_known[:, [0, 2, 3, 4]]).all()
    # Three of five unknown, as measured in the issue: every forget item changes a known label, uniformly over the
    # three other known vectors; retain items and items without a known label keep theirs.
    labels = torch.tensor([[1.0, nan, 0.0, nan, nan]] * 3000 + [[nan] * 5] * 10)
    flags = torch.tensor([1, 0] * 1500 + [1] * 10)
    relabeled = _relabel_batch(labels, flags, seed=1)
    assert torch.allclose(relabeled[1:3000:2], labels[1:3000:2], equal_nan=True)
    assert torch.isnan(relabeled[3000:]).all() and torch.isnan(relabeled[:, [1, 3, 4]]).all()
    known = relabeled[0:3000:2][:, [0, 2]]
    codes = (known.long() * torch.tensor([1, 2])).sum(dim=1)
    counts = torch.bincount(codes, minlength=4)
    assert counts[1] == 0  # (1, 0), the true known labels
    assert (counts[[0, 2, 3]] > 1500 / 3 * 0.85).all()
