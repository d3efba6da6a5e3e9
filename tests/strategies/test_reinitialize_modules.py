from types import SimpleNamespace

import pytest
import torch

from medunlearn_monai.strategies import ReinitializeModules

from .conftest import ENCODER, tiny_segmenter


def trained_looking_network() -> torch.nn.Module:
    """The tiny segmenter with every parameter and BN counter moved away from its default initialisation."""
    network = tiny_segmenter()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter))
        for name, buffer in network.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.fill_(100)
    return network


def in_encoder(name: str) -> bool:
    return any(name == module or name.startswith(module + ".") for module in ENCODER)


def reinitialized_state(make_seg_trainer, seed: int) -> tuple[dict, dict]:
    network = trained_looking_network()
    before = {name: value.clone() for name, value in network.state_dict().items()}
    # lr=0 and one batch of all 32 items: a single iteration that changes no parameter by itself.
    trainer = make_seg_trainer(
        network=network, handlers=[ReinitializeModules(ENCODER, seed=seed)], lr=0.0, batch_size=32
    )
    trainer.run()
    return before, {name: value.clone() for name, value in network.state_dict().items()}


def test_named_modules_are_reinitialized_reproducibly_and_others_untouched(make_seg_trainer):
    before, after = reinitialized_state(make_seg_trainer, seed=5)
    _, again = reinitialized_state(make_seg_trainer, seed=5)
    _, other_seed = reinitialized_state(make_seg_trainer, seed=6)
    encoder_names = [name for name in before if in_encoder(name.rsplit(".", 1)[0])]
    assert {name.split(".")[0] for name in encoder_names} == set(ENCODER)
    for name in before:
        assert torch.equal(after[name], again[name]), name
        if not in_encoder(name.rsplit(".", 1)[0]):
            if "running" not in name and "num_batches" not in name:  # BN statistics move in the forward pass
                assert torch.equal(after[name], before[name]), name
        elif name.endswith("num_batches_tracked"):
            assert after[name] == 1  # reset to 0, then one training forward pass
        elif "running" not in name:
            assert not torch.equal(after[name], before[name]), name
    conv_weights = [name for name in encoder_names if name.endswith("weight") and after[name].dim() == 5]
    assert any(not torch.equal(after[name], other_seed[name]) for name in conv_weights)
    assert after["conv_seg.1.num_batches_tracked"] == 101


def test_reinitialization_leaves_the_global_random_state_alone():
    network = tiny_segmenter()
    state = torch.random.get_rng_state()
    ReinitializeModules(ENCODER)(SimpleNamespace(network=network))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_unknown_module_name_lists_the_top_level_children(make_seg_trainer):
    children = r"\['conv1', 'bn1', 'relu', 'layer1', 'conv_seg'\]"
    trainer = make_seg_trainer(handlers=[ReinitializeModules(["encoder"])])  # attached before the network is set
    with pytest.raises(ValueError, match=rf"'encoder' matches no submodule.*{children}"):
        trainer.run()
    with pytest.raises(ValueError, match="'layer' matches no submodule"):  # a prefix of a name is not a match
        ReinitializeModules(["layer"]).attach(make_seg_trainer())


def test_module_names_must_be_a_list_of_names():
    with pytest.raises(TypeError, match="list of module names"):
        ReinitializeModules("conv_seg")
    with pytest.raises(ValueError, match="at least one"):
        ReinitializeModules([])
    with pytest.raises(ValueError, match="empty"):
        ReinitializeModules([""])


def test_module_with_parameters_but_no_reset_is_refused():
    network = torch.nn.Module()
    network.scale = torch.nn.Parameter(torch.ones(3))
    network.head = torch.nn.Linear(3, 1)
    holder = torch.nn.Module()
    holder.body = network
    ReinitializeModules(["body.head"])(SimpleNamespace(network=holder))
    with pytest.raises(TypeError, match=r"\['body'\].*no reset_parameters"):
        ReinitializeModules(["body"])(SimpleNamespace(network=holder))
