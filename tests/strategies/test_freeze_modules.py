import pytest
import torch

from medunlearn_monai.strategies import FreezeModules, NoisyLabel

from .conftest import SEG_CLASSES


def frozen(name: str, module_names: list[str]) -> bool:
    return any(name.startswith(module + ".") for module in module_names)


@pytest.mark.parametrize("module_names", [["conv_seg"], ["bn1", "layer1.0"]])
def test_frozen_modules_stay_bit_identical_with_momentum_and_weight_decay(make_seg_trainer, module_names):
    handlers = [NoisyLabel(SEG_CLASSES), FreezeModules(module_names)]
    trainer = make_seg_trainer(handlers=handlers, lr=0.1, momentum=0.9, weight_decay=0.01, epochs=3)
    network = trainer.network
    before = {name: value.clone() for name, value in network.state_dict().items()}
    trainer.run()
    after = network.state_dict()
    assert any(frozen(name, module_names) and "running" in name for name in before)  # BN statistics are covered
    for name, value in after.items():
        if frozen(name, module_names):
            assert torch.equal(value, before[name]), name
        elif not name.endswith("num_batches_tracked"):
            assert not torch.equal(value, before[name]), name
    for name, parameter in network.named_parameters():
        if frozen(name, module_names):  # the optimizer never saw a gradient for them: no momentum either
            assert parameter.grad is None and not trainer.optimizer.state[parameter], name


def test_unknown_module_name_lists_the_top_level_children(make_seg_trainer):
    trainer = make_seg_trainer(handlers=[FreezeModules(["decoder"])])
    with pytest.raises(ValueError, match=r"'decoder' matches no submodule.*\['conv1', 'bn1', 'relu', 'layer1'"):
        trainer.run()
    with pytest.raises(ValueError, match="'conv_se' matches no submodule"):
        FreezeModules(["conv_se"]).attach(make_seg_trainer())
    with pytest.raises(TypeError, match="list of module names"):
        FreezeModules("conv_seg")
