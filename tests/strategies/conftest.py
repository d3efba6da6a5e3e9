"""A tiny stock MONAI trainer over flagged items, to attach strategies to."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss

NUM_CLASSES = 4


def flagged_items(count: int = 32, forget_every: int = 4) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn(1, 6, 6, generator=generator),
            "label": index % NUM_CLASSES,
            "forget": int(index % forget_every == 0),
        }
        for index in range(count)
    ]


def small_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64, NUM_CLASSES),
    )


@pytest.fixture
def make_trainer():
    def build(items=None, handlers=(), lr=0.1, weight_decay=0.0, momentum=0.0, epochs=1, batch_size=8):
        network = small_network()
        optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        loader = DataLoader(items or flagged_items(), batch_size=batch_size, shuffle=False)
        return SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=epochs,
            train_data_loader=loader,
            network=network,
            optimizer=optimizer,
            loss_function=torch.nn.CrossEntropyLoss(reduction="none"),
            train_handlers=list(handlers),
        )

    return build


SEG_CLASSES = 3
ENCODER = ["conv1", "bn1", "layer1"]


def segmentation_items(count: int = 32, forget_every: int = 4, size: int = 4) -> list[dict]:
    """3D items like the segmentation data: a (1, X, Y, Z) image and a class-index label map of the same shape."""
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn(1, size, size, size, generator=generator),
            "label": torch.randint(0, SEG_CLASSES, (1, size, size, size), generator=generator),
            "forget": int(index % forget_every == 0),
        }
        for index in range(count)
    ]


class TinySegmenter(torch.nn.Module):
    """A miniature of Med3DSegmenter's layout: encoder ``conv1``, ``bn1``, ``layer1``; decoder ``conv_seg``."""

    def __init__(self, num_classes: int = SEG_CLASSES):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(1, 4, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm3d(4)
        self.relu = torch.nn.ReLU()
        self.layer1 = torch.nn.Sequential(
            torch.nn.Conv3d(4, 4, 3, padding=1, bias=False), torch.nn.BatchNorm3d(4), torch.nn.ReLU()
        )
        self.conv_seg = torch.nn.Sequential(
            torch.nn.Conv3d(4, 4, 3, padding=1, bias=False),
            torch.nn.BatchNorm3d(4),
            torch.nn.ReLU(),
            torch.nn.Conv3d(4, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.layer1(self.relu(self.bn1(self.conv1(x)))))


def tiny_segmenter() -> TinySegmenter:
    torch.manual_seed(0)
    return TinySegmenter()


@pytest.fixture
def make_seg_trainer():
    def build(items=None, handlers=(), lr=0.1, weight_decay=0.0, momentum=0.0, epochs=1, batch_size=8, network=None):
        network = tiny_segmenter() if network is None else network
        optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        loader = DataLoader(items or segmentation_items(), batch_size=batch_size, shuffle=False)
        return SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=epochs,
            train_data_loader=loader,
            network=network,
            optimizer=optimizer,
            loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
            train_handlers=list(handlers),
        )

    return build
