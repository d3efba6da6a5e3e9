"""The amp and channels-last options: bfloat16 autocast around any inferer, float32 out; the 2D memory format."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer

from medunlearn_monai.precision import AutocastInferer, memory_format


class _Recorder(torch.nn.Module):
    """A linear layer that records whether autocast was on and which dtype its matrix product returned."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.linear(inputs)
        self.seen.append((torch.is_autocast_enabled("cpu"), outputs.dtype))
        return outputs


def test_enabled_runs_the_forward_pass_in_bfloat16_and_returns_float32():
    network = _Recorder()
    predictions = AutocastInferer(SimpleInferer(), enabled=True, device="cpu")(torch.randn(2, 4), network)
    assert network.seen == [(True, torch.bfloat16)]
    assert predictions.dtype == torch.float32
    predictions.sum().backward()  # the backward pass follows the casts into float32 weights
    assert network.linear.weight.grad.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("enabled", [False, "false"])
def test_disabled_hands_back_the_inner_inferers_output_unchanged(enabled):
    network = _Recorder()
    inputs = torch.randn(2, 4)
    predictions = AutocastInferer(SimpleInferer(), enabled=enabled, device=torch.device("cpu"))(inputs, network)
    assert network.seen == [(False, torch.float32)]
    assert torch.equal(predictions, network.linear(inputs))


def test_command_line_text_and_unknown_values():
    assert AutocastInferer(SimpleInferer(), enabled="true").enabled
    with pytest.raises(ValueError, match="amp must be true or false, got 'bf16'"):
        AutocastInferer(SimpleInferer(), enabled="bf16")
    with pytest.raises(ValueError, match="amp: torch cannot autocast on a meta device; set amp to false"):
        AutocastInferer(SimpleInferer(), enabled=True, device="meta")
    with pytest.raises(TypeError, match="inferer must be callable, got str"):
        AutocastInferer("SimpleInferer", enabled=True)


def test_channels_last_memory_format_of_a_2d_network():
    assert memory_format(False) is torch.preserve_format
    network = torch.nn.Conv2d(3, 8, 3).to(memory_format=memory_format("true"))
    assert network.weight.is_contiguous(memory_format=torch.channels_last)
    assert not network.weight.is_contiguous()
    with pytest.raises(ValueError, match="channels_last must be true or false, got 'nhwc'"):
        memory_format("nhwc")
