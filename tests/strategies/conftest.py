"""A tiny stock MONAI trainer over flagged items, to attach strategies to."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

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
