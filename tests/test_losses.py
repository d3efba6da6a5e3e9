import torch

from medunlearn_monai.losses import MaskedBCEWithLogitsLoss


def test_unknown_targets_add_no_loss_and_no_gradient():
    logits = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan"), 0.0]])
    losses = MaskedBCEWithLogitsLoss()(logits, targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor([[1.0, 0.0, 0.0]]), reduction="none"
    )
    assert losses[0, 1] == 0 and torch.allclose(losses[0, [0, 2]], expected[0, [0, 2]])
    losses.sum().backward()
    assert logits.grad[0, 1] == 0 and logits.grad[0, 0] != 0
