"""Train and unlearn in several processes started by ``torchrun``, through ignite's ``idist``.

A bundle's ``configs/multi_gpu_train.json`` / ``multi_gpu_unlearn.json``, layered after the workflow's config list,
join the process group first, wrap the network in ``DistributedDataParallel``, give every process its share of each
batch through MONAI's ``DistributedSampler``, and leave the progress bar, the model file, the certificate and the MLflow
run to rank 0. These are the helpers those files call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.handlers import ProgressBar

from medunlearn_monai.certificate.issue import CertificateWriter
from medunlearn_monai.model_io import ModelWriter

# Handlers whose effect leaves the process: on every rank they would print the same bar and write the same files.
# MLflow logging needs no entry here: the tracker of a rank > 0 is disabled (``tracker#enabled``).
RANK_ZERO_HANDLERS = (ProgressBar, ModelWriter, CertificateWriter)


def initialize() -> None:
    """Join the process group described by torchrun's environment: nccl on CUDA, gloo on CPU.

    ignite picks the GPU of the process's ``LOCAL_RANK`` (``idist.device()``). Without torchrun's environment the
    group is this process alone; a group already joined is kept.
    """
    if not torch.distributed.is_initialized():
        idist.initialize("nccl" if torch.cuda.is_available() else "gloo")


def per_process_batch_size(batch_size: int) -> int:
    """Each process's share of the global ``batch_size``: together the processes step on as many items as one would.

    Raises:
        ValueError: when ``batch_size`` is not a multiple of the number of processes.
    """
    world_size = idist.get_world_size()
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} does not split evenly over {world_size} processes: give a multiple of "
            f"{world_size}, so that each step sees as many items as a one-process run with that batch_size."
        )
    return batch_size // world_size


def handlers_of_this_rank(handlers: Sequence[Any]) -> list[Any]:
    """The handlers this process attaches: all on rank 0; on other ranks all but the :data:`RANK_ZERO_HANDLERS`.

    Every rank keeps what takes part in training (LR schedule, validation, strategies) and the checkpointer, which
    every rank needs to resume; its files are written by rank 0 only.
    """
    if idist.get_rank() == 0:
        return list(handlers)
    return [handler for handler in handlers if not isinstance(handler, RANK_ZERO_HANDLERS)]
