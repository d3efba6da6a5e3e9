import pytest
import torch

from medunlearn_monai.networks.med3d import CheckpointMismatchError, Med3DSegmenter, load_medicalnet_weights
from medunlearn_monai.safe_loading import UntrustedCheckpointError


@pytest.mark.parametrize(("depth", "shortcut"), [(10, "B"), (18, "A")])
def test_output_has_class_channels_at_a_quarter_of_the_input_resolution(depth, shortcut):
    network = Med3DSegmenter(depth=depth, num_classes=3).eval()
    assert network.shortcut_type == shortcut
    with torch.no_grad():
        output = network(torch.randn(1, 1, 16, 32, 24))
    assert output.shape == (1, 3, 4, 8, 6)


def test_layer3_and_layer4_are_dilated_at_stride_one():
    network = Med3DSegmenter(depth=10)
    assert network.layer3[0].conv1.dilation == (2, 2, 2) and network.layer3[0].conv1.stride == (1, 1, 1)
    assert network.layer4[0].conv1.dilation == (4, 4, 4) and network.layer4[0].conv1.stride == (1, 1, 1)
    assert network.layer2[0].conv1.stride == (2, 2, 2)


def test_depth_50_uses_bottlenecks_and_parameter_names_of_medicalnet():
    names = Med3DSegmenter(depth=50).state_dict().keys()
    for name in ["conv1.weight", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var",
                 "conv_seg.0.weight", "conv_seg.6.weight"]:  # fmt: skip
        assert name in names


def test_loads_a_dataparallel_encoder_checkpoint_and_reports_the_head_missing(tmp_path):
    source = Med3DSegmenter(depth=10, num_classes=2)
    encoder = {f"module.{key}": value for key, value in source.state_dict().items() if not key.startswith("conv_seg")}
    torch.save({"state_dict": encoder}, tmp_path / "resnet_10.pth")
    target = Med3DSegmenter(depth=10, num_classes=4)
    head_before = target.conv_seg[6].weight.clone()
    report = load_medicalnet_weights(target, tmp_path / "resnet_10.pth")
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert torch.equal(target.layer4[0].bn2.running_mean, source.layer4[0].bn2.running_mean)
    assert torch.equal(target.conv_seg[6].weight, head_before)
    assert report.unexpected == [] and all(key.startswith("conv_seg") for key in report.missing)
    assert len(report.loaded) == len(encoder)


def test_single_channel_stem_is_adapted_to_more_input_channels_only_when_asked(tmp_path):
    source = Med3DSegmenter(depth=10, in_channels=1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "resnet_10.pth")
    target = Med3DSegmenter(depth=10, in_channels=3)
    with pytest.raises(CheckpointMismatchError, match="conv1.weight.*adapt_input_channels=True"):
        load_medicalnet_weights(target, tmp_path / "resnet_10.pth")
    report = load_medicalnet_weights(target, tmp_path / "resnet_10.pth", adapt_input_channels=True)
    assert report.adapted == ["conv1.weight"]
    volume = torch.randn(1, 1, 16, 16, 16)
    source.eval(), target.eval()
    with torch.no_grad():
        single = source.maxpool(source.relu(source.bn1(source.conv1(volume))))
        stacked = target.maxpool(target.relu(target.bn1(target.conv1(volume.repeat(1, 3, 1, 1, 1)))))
    assert torch.allclose(single, stacked, atol=1e-5)


def test_logits_can_be_upsampled_to_the_input_size():
    network = Med3DSegmenter(depth=10, num_classes=3, upsample_to_input=True).eval()
    with torch.no_grad():
        assert network(torch.randn(1, 1, 20, 24, 12)).shape == (1, 3, 20, 24, 12)


def test_checkpoint_of_another_depth_is_refused_with_the_reason(tmp_path):
    torch.save({"state_dict": Med3DSegmenter(depth=50).state_dict()}, tmp_path / "resnet_50.pth")
    with pytest.raises(CheckpointMismatchError, match="differ in shape.*check the depth"):
        load_medicalnet_weights(Med3DSegmenter(depth=10), tmp_path / "resnet_50.pth")


def test_unrelated_or_missing_files_are_refused(tmp_path):
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="shares no parameter name"):
        load_medicalnet_weights(Med3DSegmenter(depth=10), tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_medicalnet_weights(Med3DSegmenter(depth=10), tmp_path / "absent.pth")


def test_pickled_code_is_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"state_dict": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UntrustedCheckpointError, match=r"evil\.pth was refused: it refers to (builtins\.)?print,"):
        load_medicalnet_weights(Med3DSegmenter(depth=10), tmp_path / "evil.pth")


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"depth": 101}, "depth must be"), ({"shortcut_type": "C"}, "'A' or 'B'")]
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Med3DSegmenter(**kwargs)
