"""SCRUB: move away from the frozen original model on forget items, stay close to it on retain items."""

from __future__ import annotations

import copy
import math
from numbers import Integral

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys
from torch import nn
from torch.nn import functional

from medunlearn_monai.forget import FORGET_KEY
from medunlearn_monai.strategies._batch import forget_mask
from medunlearn_monai.strategies._modules import unwrap_network
from medunlearn_monai.strategies._state import NoRunState


class Scrub(NoRunState):
    """Replace the trainer's batch loss by SCRUB's max-step and min-step terms (Kurmanji et al., NeurIPS 2023).

    The teacher is a frozen eval-mode copy of the network as loaded when the run starts (the original
    model). Per item, ``kl`` is ``T^2 * KL(teacher || student)`` of the temperature-scaled outputs: over
    the class dimension for softmax outputs (averaged over voxels for segmentation logits), or per
    observation for sigmoid outputs with ``multilabel`` (averaged over observations). During the first
    ``max_steps_epochs`` epochs forget items contribute ``-kl`` (max-step); afterwards nothing. Retain
    items always contribute ``kl_weight * kl + ce_weight * ce`` (min-step), ``ce`` being the trainer's
    per-item loss (``reduction="none"``; voxel- or observation-wise losses averaged per item). The
    terms are summed and divided by the batch size, as in :class:`GradientAscent`.

    The teacher is copied at ``Events.STARTED``: attach this after the handler that loads the original
    model and before ``RunCheckpointer``, so a resumed run's teacher is still the original.

    Args:
        max_steps_epochs: number of leading epochs with max-steps on forget items (>= 0).
        kl_weight: weight of the KL term on retain items (alpha, >= 0).
        ce_weight: weight of the trainer's loss on retain items (gamma, >= 0).
        temperature: softmax/sigmoid temperature of the KL (> 0).
        multilabel: outputs are independent per-observation logits (sigmoid), not one softmax.
        forget_key: batch key of the per-item forget flag.

    Raises:
        TypeError: when ``max_steps_epochs`` is not an integer.
        ValueError: for a negative ``max_steps_epochs``, ``kl_weight`` or ``ce_weight``, both weights
            zero, or a temperature that is not a positive number.
    """

    def __init__(
        self,
        max_steps_epochs: int = 1,
        kl_weight: float = 1.0,
        ce_weight: float = 1.0,
        temperature: float = 4.0,
        multilabel: bool = False,
        forget_key: str = FORGET_KEY,
    ):
        if isinstance(max_steps_epochs, bool) or not isinstance(max_steps_epochs, Integral):
            raise TypeError(f"max_steps_epochs must be an integer, got {max_steps_epochs!r}.")
        if max_steps_epochs < 0:
            raise ValueError(f"max_steps_epochs must not be negative, got {max_steps_epochs}.")
        if kl_weight < 0 or ce_weight < 0:
            raise ValueError(f"kl_weight and ce_weight must not be negative, got {kl_weight} and {ce_weight}.")
        if kl_weight == 0 and ce_weight == 0:
            raise ValueError("kl_weight and ce_weight are both 0: retain items would contribute nothing.")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}.")
        self.max_steps_epochs = int(max_steps_epochs)
        self.kl_weight = kl_weight
        self.ce_weight = ce_weight
        self.temperature = temperature
        self.multilabel = multilabel
        self.forget_key = forget_key
        self.teacher: nn.Module | None = None

    def attach(self, engine: Engine) -> None:
        """Copy the teacher when the run starts; rewrite the loss before it back-propagates."""
        engine.add_event_handler(Events.STARTED, self.copy_teacher)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def copy_teacher(self, engine: Engine) -> None:
        """Freeze an eval-mode copy of the network as it is now (the original model)."""
        self.teacher = copy.deepcopy(unwrap_network(engine.network)).eval().requires_grad_(False)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        student = output[CommonKeys.PRED]
        ce = engine.loss_function(student, output[CommonKeys.LABEL])
        if ce.dim() == 0:
            raise ValueError("Scrub needs one loss per item: set reduction='none' on the trainer's loss function.")
        ce = ce.reshape(ce.shape[0], -1).float().mean(dim=1)
        with torch.no_grad():
            teacher = engine.inferer(output[CommonKeys.IMAGE], self.teacher)
        kl = self._divergence(student, teacher)
        flags = forget_mask(engine, self.forget_key).to(kl.device)
        forget_terms = -kl if engine.state.epoch <= self.max_steps_epochs else torch.zeros_like(kl)
        retain_terms = self.kl_weight * kl + self.ce_weight * ce
        output[CommonKeys.LOSS] = torch.where(flags, forget_terms, retain_terms).sum() / kl.shape[0]

    def _divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Per-item ``T^2 * KL(teacher || student)`` of the temperature-scaled outputs."""
        student, teacher = student.float() / self.temperature, teacher.float() / self.temperature
        if self.multilabel:  # a sigmoid is the softmax over (logit, 0): one two-class KL per observation
            student = torch.stack([student, torch.zeros_like(student)], dim=1)
            teacher = torch.stack([teacher, torch.zeros_like(teacher)], dim=1)
        log_student = functional.log_softmax(student, dim=1)
        log_teacher = functional.log_softmax(teacher, dim=1)
        kl = functional.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(dim=1)
        return kl.reshape(kl.shape[0], -1).mean(dim=1) * self.temperature**2
