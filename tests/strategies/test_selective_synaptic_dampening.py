import copy
import math

import pytest
import torch
from monai.data import DataLoader
from torch.nn import functional

from medunlearn_monai.losses import MaskedBCEWithLogitsLoss
from medunlearn_monai.model_io import ModelWriter, read_record
from medunlearn_monai.strategies import SelectiveSynapticDampening
from medunlearn_monai.strategies.selective_synaptic_dampening import dampen, fisher_importance

from .conftest import flagged_items, segmentation_items


def test_dampen_multiplies_exactly_the_selected_elements_by_the_capped_ratio():
    network = torch.nn.Linear(2, 2)
    with torch.no_grad():
        network.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
        network.bias.copy_(torch.tensor([0.5, -0.5]))
    before = {name: value.detach().clone() for name, value in network.named_parameters()}
    training = {"weight": torch.tensor([[1.0, 1.0], [0.0, 2.0]]), "bias": torch.tensor([1.0, 0.0])}
    forget = {"weight": torch.tensor([[20.0, 5.0], [1.0, 30.0]]), "bias": torch.tensor([10.0, 0.0])}
    # alpha = 10: 20 > 10 (x 2/20), 5 < 10, 1 > 0 (x 0), 30 > 20 (x 2 * 2/30); bias 10 = 10 and 0 = 0 not selected.
    count = dampen(network, training, forget, selection_weight=10.0, dampening_constant=2.0)
    assert count == 3
    assert torch.allclose(network.weight, torch.tensor([[1.0 * 0.1, -2.0], [0.0, 4.0 * 4.0 / 30.0]]))
    assert network.weight[0, 1] == before["weight"][0, 1]
    assert torch.equal(network.bias, before["bias"])


def test_dampening_never_scales_an_element_up():
    network = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        network.weight.fill_(3.0)
    count = dampen(network, {"weight": torch.tensor([[1.0]])}, {"weight": torch.tensor([[2.0]])}, 1.5, 10.0)
    assert count == 1 and network.weight.item() == 3.0  # lambda * I_D / I_f = 5, capped at 1


def test_fisher_is_the_mean_over_batches_of_the_squared_batch_mean_gradient():
    torch.manual_seed(0)
    network = torch.nn.Linear(3, 2)
    batches = [
        {"image": torch.randn(4, 3), "label": torch.tensor([0, 1, 1, 0])},
        {"image": torch.randn(2, 3), "label": torch.tensor([1, 1])},
    ]
    importance = fisher_importance(network, batches, torch.nn.CrossEntropyLoss(reduction="none"), "cpu")
    # cross-entropy on a linear layer: d mean-loss / d logits = (softmax - one-hot) / batch size
    weight_squares, bias_squares = [], []
    for batch in batches:
        with torch.no_grad():
            logits_gradient = (
                torch.softmax(network(batch["image"]), dim=1) - functional.one_hot(batch["label"], 2)
            ) / len(batch["label"])
        weight_squares.append((logits_gradient.T @ batch["image"]).square())
        bias_squares.append(logits_gradient.sum(dim=0).square())
    assert torch.allclose(importance["weight"], sum(weight_squares) / 2, atol=1e-7)
    assert torch.allclose(importance["bias"], sum(bias_squares) / 2, atol=1e-7)


def test_fisher_ignores_unknown_multilabel_targets():
    torch.manual_seed(0)
    network = torch.nn.Linear(3, 2)
    labels = torch.tensor([[1.0, math.nan], [0.0, math.nan], [1.0, math.nan]])
    importance = fisher_importance(
        network, [{"image": torch.randn(3, 3), "label": labels}], MaskedBCEWithLogitsLoss(), "cpu"
    )
    assert torch.all(importance["weight"][0] > 0) and importance["bias"][0] > 0
    assert torch.equal(importance["weight"][1], torch.zeros(3)) and importance["bias"][1] == 0


def squared_gradient_means(network: torch.nn.Module, loader) -> list[torch.Tensor]:
    network.eval()
    parameters = list(network.parameters())
    totals = [torch.zeros_like(parameter) for parameter in parameters]
    batches = list(loader)
    for batch in batches:
        loss = functional.cross_entropy(network(batch["image"]), batch["label"], reduction="none").mean()
        for total, gradient in zip(totals, torch.autograd.grad(loss, parameters), strict=True):
            total += gradient.square()
    return [total / len(batches) for total in totals]


def test_run_dampens_the_selected_weights_and_ends_before_any_optimizer_step(make_trainer, tmp_path):
    items = flagged_items()
    train_loader = DataLoader(items, batch_size=8)
    forget_loader = DataLoader([item for item in items if item["forget"]], batch_size=8)
    ssd = SelectiveSynapticDampening(train_loader, forget_loader, selection_weight=2.0, dampening_constant=0.5)
    writer = ModelWriter(tmp_path / "model.pt", record={"strategy": "ssd"})
    trainer = make_trainer(items=items, handlers=[ssd, writer], lr=1e6, momentum=0.9, weight_decay=0.1, epochs=3)
    before = copy.deepcopy(trainer.network.state_dict())
    reference = copy.deepcopy(trainer.network)
    training = squared_gradient_means(reference, train_loader)
    forget = squared_gradient_means(reference, forget_loader)

    trainer.run()

    assert trainer.state.iteration == 0 and trainer.state.epoch == 0
    selected_total = 0
    for (name, value), i_d, i_f in zip(trainer.network.named_parameters(), training, forget, strict=True):
        selected = i_f > 2.0 * i_d
        selected_total += int(selected.sum())
        expected = torch.where(selected, before[name] * torch.clamp(0.5 * i_d / i_f, max=1.0), before[name])
        assert torch.equal(value.detach()[~selected], before[name][~selected]), name
        assert torch.allclose(value.detach(), expected, rtol=1e-6, atol=0.0), name
    total = sum(value.numel() for value in trainer.network.parameters())
    assert ssd.dampened_count == selected_total and 0 < selected_total < total
    for name, value in trainer.network.named_buffers():  # BatchNorm statistics untouched
        assert torch.equal(value, before[name]), name
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(saved[name], value) for name, value in trainer.network.state_dict().items())
    record = read_record(tmp_path / "model.pt")
    assert record["epochs"] == 0  # dampening is one pass, no epoch
    assert record["seconds"] > 0  # only that the cost is recorded: a duration has no expected value


def test_segmentation_losses_over_voxels_work(make_seg_trainer):
    items = segmentation_items()
    train_loader = DataLoader(items, batch_size=8)
    forget_loader = DataLoader([item for item in items if item["forget"]], batch_size=8)
    ssd = SelectiveSynapticDampening(train_loader, forget_loader, selection_weight=2.0)
    trainer = make_seg_trainer(items=items, handlers=[ssd], lr=1e6)
    before = copy.deepcopy(trainer.network.state_dict())
    trainer.run()
    assert trainer.state.iteration == 0 and ssd.dampened_count > 0
    after = trainer.network.state_dict()
    changed = sum(int((after[name] != before[name]).sum()) for name in before)
    assert 0 < changed <= ssd.dampened_count
    assert all(torch.isfinite(value).all() for value in after.values())


def test_an_empty_loader_is_refused(make_trainer):
    trainer = make_trainer(handlers=[SelectiveSynapticDampening(DataLoader(flagged_items(), batch_size=8), [])])
    with pytest.raises(ValueError, match="yielded no batch"):
        trainer.run()


@pytest.mark.parametrize(
    ("selection_weight", "dampening_constant"),
    [(0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), (10.0, 0.0), (10.0, math.inf)],
)
def test_invalid_knobs(selection_weight, dampening_constant):
    with pytest.raises(ValueError, match="positive finite"):
        SelectiveSynapticDampening([], [], selection_weight, dampening_constant)
