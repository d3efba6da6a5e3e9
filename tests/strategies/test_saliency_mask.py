import pytest
import torch
from monai.data import DataLoader

from medunlearn_monai.strategies import RandomRelabel, SaliencyMask

from .conftest import NUM_CLASSES, flagged_items


@pytest.mark.parametrize("ratio", [0.1, 0.5])
def test_non_salient_weights_stay_bit_identical_with_momentum_and_weight_decay(make_trainer, ratio):
    items = flagged_items()
    forget_loader = DataLoader([item for item in items if item["forget"]], batch_size=4)
    mask = SaliencyMask(forget_loader, ratio=ratio)
    trainer = make_trainer(
        items=items, handlers=[RandomRelabel(NUM_CLASSES), mask], lr=0.1, momentum=0.9, weight_decay=0.01, epochs=3
    )
    before = {name: value.detach().clone() for name, value in trainer.network.named_parameters()}
    trainer.run()
    total = sum(value.numel() for value in before.values())
    salient = sum(int(selected.sum()) for selected in mask.masks.values())
    assert salient == round(ratio * total)
    changed = 0
    for name, value in trainer.network.named_parameters():
        frozen = ~mask.masks[name]
        assert torch.equal(value.detach()[frozen], before[name][frozen]), name
        changed += int((value.detach() != before[name]).sum())
    assert 0 < changed <= salient


def test_mask_ranks_by_forget_gradient_magnitude(make_trainer):
    items = flagged_items()
    forget_items = [item for item in items if item["forget"]]
    mask = SaliencyMask(DataLoader(forget_items, batch_size=8), ratio=0.25)
    trainer = make_trainer(items=items, handlers=[mask], epochs=1)
    network = trainer.network
    reference = {name: value.detach().clone() for name, value in network.state_dict().items()}
    network.eval()
    batch = next(iter(DataLoader(forget_items, batch_size=8)))
    torch.nn.functional.cross_entropy(network(batch["image"]), batch["label"]).backward()
    magnitudes = torch.cat([p.grad.abs().flatten() for p in network.parameters()])
    network.zero_grad(set_to_none=True)
    network.load_state_dict(reference)
    mask(trainer)
    chosen = torch.cat([selected.flatten() for selected in mask.masks.values()])
    assert magnitudes[chosen].min() >= magnitudes[~chosen].max()


def test_ratio_bounds():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        SaliencyMask([], ratio=0.0)
