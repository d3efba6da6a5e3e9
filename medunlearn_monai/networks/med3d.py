"""MedicalNet (Med3D) segmentation ResNet, with loading of MedicalNet's pre-trained ``.pth`` checkpoints.

MONAI's ``ResNet`` has no dilated stages, which MedicalNet's segmenter uses (layer3/layer4 at stride
1 with dilation 2/4), so the network is written here with MedicalNet's parameter names
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0``, ``conv_seg``...) so its checkpoints load.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from medunlearn_monai.safe_loading import load_weights

logger = logging.getLogger(__name__)
MED3D_DEPTHS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                50: ("bottleneck", (3, 4, 6, 3))}  # fmt: skip
WIDTHS = (64, 128, 256, 512)


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + residual)


class _ZeroPadShortcut(nn.Module):
    """MedicalNet's shortcut type A: strided average pooling, then zero channels up to the new width."""

    def __init__(self, planes: int, stride: int):
        super().__init__()
        self.planes = planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.avg_pool3d(x, kernel_size=1, stride=self.stride)
        padding = out.new_zeros(out.shape[0], self.planes - out.shape[1], *out.shape[2:])
        return torch.cat([out, padding], dim=1)


class Med3DSegmenter(nn.Module):
    """MedicalNet's 3D ResNet segmenter: encoder with dilated layer3/layer4 and the ``conv_seg`` head.

    The head's output has ``num_classes`` channels at 1/4 of the input resolution (strides 2, 2, 2
    down, one x2 transposed convolution up), as in MedicalNet, which resizes the labels to it. With
    ``upsample_to_input`` the logits are trilinearly upsampled to the input size instead, so the
    network plugs into full-resolution losses, metrics and sliding-window inference.

    Args:
        depth: 10, 18, 34 or 50 (bottleneck blocks for 50).
        in_channels: input channels (MedicalNet was pre-trained on 1).
        num_classes: output channels of the segmentation head.
        shortcut_type: ``"A"`` (zero-padding) or ``"B"`` (1x1x1 convolution); MedicalNet uses B for
            depths 10 and 50 and A for 18 and 34, which is the default.
        upsample_to_input: return logits at the input's spatial size.

    Raises:
        ValueError: for an unsupported depth or shortcut type.
    """

    def __init__(
        self,
        depth: int = 50,
        in_channels: int = 1,
        num_classes: int = 2,
        shortcut_type: str | None = None,
        upsample_to_input: bool = False,
    ):
        super().__init__()
        if depth not in MED3D_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(MED3D_DEPTHS)}, got {depth}.")
        shortcut_type = shortcut_type or ("B" if depth in (10, 50) else "A")
        if shortcut_type not in ("A", "B"):
            raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}.")
        kind, counts = MED3D_DEPTHS[depth]
        block = _Bottleneck if kind == "bottleneck" else _BasicBlock
        self.shortcut_type = shortcut_type
        self.upsample_to_input = upsample_to_input
        self.in_planes = 64
        self.conv1 = nn.Conv3d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, WIDTHS[0], counts[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(block, WIDTHS[1], counts[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(block, WIDTHS[2], counts[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(block, WIDTHS[3], counts[3], stride=1, dilation=4)
        self.conv_seg = nn.Sequential(
            nn.ConvTranspose3d(WIDTHS[3] * block.expansion, 32, 2, stride=2),
            nn.BatchNorm3d(32),
            nn.ReLU(inplace=True),
            nn.Conv3d(32, 32, 3, padding=1, bias=False),
            nn.BatchNorm3d(32),
            nn.ReLU(inplace=True),
            nn.Conv3d(32, num_classes, 1, bias=False),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _make_layer(self, block: type, planes: int, count: int, stride: int, dilation: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            if self.shortcut_type == "A":
                downsample = _ZeroPadShortcut(planes * block.expansion, stride)
            else:
                downsample = nn.Sequential(
                    nn.Conv3d(self.in_planes, planes * block.expansion, 1, stride=stride, bias=False),
                    nn.BatchNorm3d(planes * block.expansion),
                )
        layers = [block(self.in_planes, planes, stride, dilation, downsample)]
        self.in_planes = planes * block.expansion
        layers += [block(self.in_planes, planes, 1, dilation, None) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_size = x.shape[2:]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.conv_seg(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        if self.upsample_to_input:
            x = functional.interpolate(x, size=input_size, mode="trilinear", align_corners=False)
        return x


@dataclass(frozen=True)
class CheckpointReport:
    """Which parameters a checkpoint filled, which it lacked or had in excess, and which were adapted."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    adapted: list[str]


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not fit the network (another depth or architecture)."""


FIRST_CONV = "conv1.weight"


def load_medicalnet_weights(
    network: nn.Module, path: str | os.PathLike, adapt_input_channels: bool = False
) -> CheckpointReport:
    """Load a MedicalNet ``.pth`` (``{"state_dict": {"module.conv1.weight": ...}}``) into ``network``.

    The file is read with ``weights_only=True``; the ``module.`` prefix of DataParallel is removed. A network wrapped
    in ``DistributedDataParallel`` (``multi_gpu_train.json``) is loaded into the module it wraps.
    Pre-trained MedicalNet files hold the encoder only, so ``conv_seg`` is reported as missing and
    keeps its initialisation. MedicalNet was pre-trained on one channel; with
    ``adapt_input_channels`` a single-channel first convolution is repeated over the network's input
    channels and divided by their number (so a stack of identical channels gives the pre-trained
    response), and reported as adapted.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        UntrustedCheckpointError: when the file holds more than tensors (it could run code when unpickled).
        CheckpointMismatchError: when no tensor matches, or a shared name has another shape.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MedicalNet checkpoint {path} does not exist.")
    checkpoint = load_weights(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointMismatchError(f"{path} holds no state_dict of tensors.")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    network = getattr(network, "module", network)
    own = network.state_dict()
    adapted = []
    if adapt_input_channels and _is_single_channel_stem(state, own):
        channels = own[FIRST_CONV].shape[1]
        state[FIRST_CONV] = state[FIRST_CONV].repeat(1, channels, 1, 1, 1) / channels
        adapted.append(FIRST_CONV)
    wrong_shape = [key for key in state if key in own and own[key].shape != state[key].shape]
    if wrong_shape:
        hint = " or load with adapt_input_channels=True" if FIRST_CONV in wrong_shape else ""
        raise CheckpointMismatchError(
            f"{path} does not fit this network: {len(wrong_shape)} tensors differ in shape, e.g. {wrong_shape[0]} "
            f"{tuple(state[wrong_shape[0]].shape)} vs {tuple(own[wrong_shape[0]].shape)}; check the depth{hint}."
        )
    loaded = sorted(key for key in state if key in own)
    if not loaded:
        raise CheckpointMismatchError(f"{path} shares no parameter name with this network; is it a MedicalNet file?")
    network.load_state_dict({**own, **{key: state[key] for key in loaded}})
    report = CheckpointReport(
        loaded=loaded,
        missing=sorted(key for key in own if key not in state),
        unexpected=sorted(key for key in state if key not in own),
        adapted=adapted,
    )
    logger.info(
        "MedicalNet checkpoint %s: %d tensors loaded, %d kept their initialisation (%s), %d ignored, adapted: %s",
        path, len(report.loaded), len(report.missing), _summary(report.missing), len(report.unexpected),
        ", ".join(report.adapted) or "none",
    )  # fmt: skip
    return report


def _summary(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "") if keys else "none"


def _is_single_channel_stem(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> bool:
    if FIRST_CONV not in state or FIRST_CONV not in own:
        return False
    theirs, ours = state[FIRST_CONV].shape, own[FIRST_CONV].shape
    return theirs[1] == 1 and ours[1] > 1 and theirs[0] == ours[0] and theirs[2:] == ours[2:]
