"""Noisy labels for forget items: LearnNoise (pure noise maps) and Noisy Label (corrupted true maps)."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from numbers import Integral
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_tensor

from medunlearn_monai.forget import FORGET_KEY
from medunlearn_monai.identities import ITEM_IDENTITY_KEY
from medunlearn_monai.strategies._labels import SeededLabelReplacement

NOISE_MODES = ("fresh", "fixed", "flip", "background")
FIXED_NOISE_KEY = "fixed_label_noise"


def _check_noise(num_classes: int, noise_fraction: float) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral):
        raise TypeError(f"num_classes must be an integer, got {num_classes!r}.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    if not 0.0 < noise_fraction <= 1.0:
        raise ValueError(f"noise_fraction must be in (0, 1], got {noise_fraction}.")


def _draw_noise(
    labels: torch.Tensor, num_classes: int, noise_fraction: float, generator: torch.Generator, noise: str
) -> torch.Tensor:
    """``labels`` with each element replaced, with probability ``noise_fraction``, by the draw of mode ``noise``.

    ``fresh`` and ``fixed`` draw a class uniformly from all ``num_classes``, ``flip`` uniformly from the others than
    the true one, ``background`` takes class 0. The draws come from the CPU ``generator``, so they do not depend on
    the device the labels live on.
    """
    if noise == "background":
        draws = torch.zeros_like(labels)
    elif noise == "flip":
        offsets = torch.randint(1, num_classes, labels.shape, generator=generator)
        draws = (labels.long() + offsets.to(labels.device)) % num_classes
    else:
        draws = torch.randint(0, num_classes, labels.shape, generator=generator)
    draws = draws.to(device=labels.device, dtype=labels.dtype)
    if noise_fraction < 1.0:
        replace = torch.rand(labels.shape, generator=generator) < noise_fraction
        draws = torch.where(replace.to(labels.device), draws, labels)
    return draws


class FixedNoiseLabeld(MapTransform):
    """Replace a forget item's label map by its fixed noise map: the same in every epoch and in a resumed run.

    Each voxel of a flagged item's label is, with probability ``noise_fraction``, replaced by a class drawn uniformly
    from all ``num_classes`` classes (the ``fresh`` rule of :class:`NoisyLabel`, drawn once). The generator is seeded
    from the SHA-256 of ``seed`` and the item's salted identity (:data:`~medunlearn_monai.identities.ITEM_IDENTITY_KEY`,
    which :func:`~medunlearn_monai.identities.with_item_identities` puts first in the training pipeline), so each
    forget item (one per subject in MRBrainS18) gets its own map, and no state is needed to draw it again.

    Deterministic, not ``Randomizable``: a ``CacheDataset`` caches its output. Put it on the whole volume, before
    random cropping, so that every patch of an item cuts the same map. Retain items keep their labels. Every item gets
    :data:`FIXED_NOISE_KEY` (1 when its label was replaced), by which :class:`NoisyLabel` checks the pipeline.

    Args:
        keys: keys of the class-index label maps.
        num_classes: number of classes of the segmentation (at least 2).
        noise_fraction: probability that a voxel is replaced by a random class, in (0, 1].
        seed: the run's seed, combined with each item's identity.
        forget_key: item key of the forget flag.
        identity_key: item key of the salted item identity.
        allow_missing_keys: do not raise when a label key is missing.

    Raises:
        TypeError: when ``num_classes`` is not an integer.
        ValueError: when ``num_classes`` is below 2 or ``noise_fraction`` is outside (0, 1].
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        noise_fraction: float = 1.0,
        seed: int = 0,
        forget_key: str = FORGET_KEY,
        identity_key: str = ITEM_IDENTITY_KEY,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        _check_noise(num_classes, noise_fraction)
        self.num_classes = num_classes
        self.noise_fraction = noise_fraction
        self.seed = seed
        self.forget_key = forget_key
        self.identity_key = identity_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """``data`` with the fixed noise map of a flagged item; :data:`FIXED_NOISE_KEY` tells whether it got one.

        Raises:
            KeyError: when the item has no forget flag, or a flagged item no identity.
        """
        d = dict(data)
        if self.forget_key not in d:
            raise KeyError(f"item has no '{self.forget_key}' flag: build the items from ForgetSplit.flagged(...).")
        flagged = bool(d[self.forget_key])
        d[FIXED_NOISE_KEY] = int(flagged)
        if not flagged:
            return d
        if self.identity_key not in d:
            raise KeyError(
                f"forget item has no '{self.identity_key}': build the pipeline with identities.with_item_identities."
            )
        digest = hashlib.sha256(f"{self.seed}\x00{d[self.identity_key]}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big"))
        for key in self.key_iterator(d):
            labels = convert_to_tensor(d[key], track_meta=False)
            noisy = _draw_noise(labels, self.num_classes, self.noise_fraction, generator, "fresh")
            d[key] = convert_to_dst_type(noisy, d[key])[0]
        return d


class NoisyLabel(SeededLabelReplacement):
    """Replace voxels of every forget item's label map by noise before the step.

    Each voxel (or element, for any label shape) of a forget item's label is, with probability ``noise_fraction``,
    replaced by the draw of the ``noise`` mode. With ``noise_fraction=1`` this is *LearnNoise*: forget inputs are
    trained towards pure noise maps; smaller fractions corrupt the true map (*Noisy Label*). The source paper says
    only that forget subjects' labels are replaced by noise or partly noisy labels; each mode is our reading of it:

    - ``fresh`` (default): a class drawn uniformly from all ``num_classes`` classes, anew each time an item is seen.
      The draw may equal the true class, so about ``noise_fraction * (1 - 1 / num_classes)`` of the voxels change.
      For ``noise_fraction`` f < 1 the true class stays the likeliest target (probability 1 - f + f / K): this is
      label smoothing, cross-entropy keeps the argmax on the true class, and it cannot make the model forget.
    - ``fixed``: the ``fresh`` draw made once per forget item and reused every epoch (and after a resume, with no
      state), by :class:`FixedNoiseLabeld`. Patches are cropped at random, so the map is drawn on the whole volume in
      the data pipeline: put :meth:`label_transform` there before cropping (the MRBrainS18 bundle's
      ``label_noise_transforms``). This handler then leaves the labels alone; it refuses a batch whose forget items
      lack the fixed map, and a random mode refuses one whose forget items already carry it.
    - ``flip``: a class drawn uniformly from the ``num_classes - 1`` others, so every replaced voxel changes.
    - ``background``: class 0, so foreground voxels become background and background voxels stay.

    Retain items keep their labels. The random modes draw from a seeded generator, so a run is reproducible, and its
    state is saved in run checkpoints. The batch is replaced, never modified in place, so tensors cached by the
    dataset do not change.

    Args:
        num_classes: number of classes of the segmentation (at least 2).
        noise_fraction: probability that a voxel is replaced, in (0, 1].
        seed: seed of the noise generator (and, for ``fixed``, of every item's map).
        label_key: batch key of the class-index label maps.
        forget_key: batch key of the per-item forget flag.
        noise: one of :data:`NOISE_MODES`: ``fresh``, ``fixed``, ``flip`` or ``background``.

    Raises:
        TypeError: when ``num_classes`` is not an integer.
        ValueError: when ``num_classes`` is below 2, ``noise_fraction`` is outside (0, 1] or ``noise`` is unknown.
    """

    def __init__(
        self,
        num_classes: int,
        noise_fraction: float = 1.0,
        seed: int = 0,
        label_key: str = "label",
        forget_key: str = FORGET_KEY,
        noise: str = "fresh",
    ):
        _check_noise(num_classes, noise_fraction)
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}; got {noise!r}.")
        super().__init__(seed, label_key, forget_key)
        self.num_classes = num_classes
        self.noise_fraction = noise_fraction
        self.seed = seed
        self.noise = noise

    def label_transform(self) -> FixedNoiseLabeld:
        """The data transform that draws this handler's ``fixed`` maps, to put in the training pipeline before cropping.

        Raises:
            ValueError: when ``noise`` is not ``fixed`` (the other modes draw in the batch, here).
        """
        if self.noise != "fixed":
            raise ValueError(f"only noise='fixed' draws its maps in the data pipeline, not noise={self.noise!r}.")
        return FixedNoiseLabeld(self.label_key, self.num_classes, self.noise_fraction, self.seed, self.forget_key)

    def replace_labels(
        self, labels: torch.Tensor, flags: torch.Tensor, batch: Mapping[str, Any]
    ) -> torch.Tensor | None:
        """The forget items' labels replaced by noise (``fixed``: None, after checking the pipeline already did).

        Raises:
            ValueError: when the forget items' labels lack the fixed map (``fixed``) or already carry it (others).
        """
        marks = torch.as_tensor(batch.get(FIXED_NOISE_KEY, torch.zeros(len(flags)))).reshape(-1).cpu().bool()
        fixed = marks[flags.cpu()]
        if self.noise == "fixed":
            if not fixed.all():
                raise ValueError(
                    "NoisyLabel(noise='fixed') got forget items without their fixed noise map: put "
                    "NoisyLabel.label_transform() in the training pipeline before cropping (label_noise_transforms)."
                )
            return None
        if fixed.any():
            raise ValueError(
                f"NoisyLabel(noise={self.noise!r}) got forget items that already carry a fixed noise map from "
                "FixedNoiseLabeld: use noise='fixed', or take the transform out of the training pipeline."
            )
        index = flags.nonzero().squeeze(1).to(labels.device)
        noisy = labels.clone()
        noisy[index] = _draw_noise(labels[index], self.num_classes, self.noise_fraction, self.generator, self.noise)
        return noisy
