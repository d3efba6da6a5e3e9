"""Bundle options for speed: bfloat16 mixed precision (``amp``) and the channels-last memory format.

MONAI 1.6.1's engines take ``amp`` but autocast on ``"cuda"`` only: on a CPU device they warn and run in
float32, and their trainer always adds a ``GradScaler``, which bfloat16 does not need (its exponent range is
float32's) and which reads its overflow flag back from the GPU at every step. The bundles therefore keep the
engines' ``amp`` off and autocast in the inferer instead (:class:`AutocastInferer`): one mechanism for CPU and
GPU, for training, validation and evaluation alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer

from medunlearn_monai.flags import as_flag

AMP_DTYPE = torch.bfloat16


class AutocastInferer(Inferer):
    """Run another inferer under ``torch.autocast`` in bfloat16 and hand back float32 predictions.

    The network's forward pass runs in bfloat16 where autocast allows it (convolutions, matrix products), and
    its backward pass follows the same casts; weights, gradients and the optimizer stay float32. Predictions are
    cast back to float32, so the loss, softmax, metrics and per-item scores are computed in float32 as they
    would be inside ``torch.autocast``. It is faster on GPUs with bfloat16 tensor cores (Ampere and newer) and
    on CPUs with native bfloat16 instructions (AVX-512 BF16, AMX); elsewhere bfloat16 is emulated and slower.

    Args:
        inferer: the inferer to run (``SimpleInferer``, ``SlidingWindowInferer``, ...).
        enabled: autocast (the bundle's ``amp``; also ``"true"``/``"false"`` as given on the command line);
            False runs ``inferer`` unchanged.
        device: the device the network runs on; its type selects the autocast backend.

    Raises:
        TypeError: when ``inferer`` is not callable.
        ValueError: when ``enabled`` is not a yes/no value, or torch cannot autocast on ``device``.
    """

    def __init__(self, inferer: Callable[..., Any], enabled: bool | str = False, device: torch.device | str = "cpu"):
        if not callable(inferer):
            raise TypeError(f"inferer must be callable, got {type(inferer).__name__}.")
        self.inferer = inferer
        self.enabled = as_flag(enabled, "amp")
        self.device_type = torch.device(device).type
        if self.enabled and not torch.amp.is_autocast_available(self.device_type):
            raise ValueError(f"amp: torch cannot autocast on a {self.device_type} device; set amp to false.")

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(self.device_type, dtype=AMP_DTYPE):
            predictions = self.inferer(inputs, network, *args, **kwargs)
        if isinstance(predictions, torch.Tensor) and predictions.is_floating_point():
            return predictions.float()
        return predictions


def memory_format(channels_last: bool | str) -> torch.memory_format:
    """The memory format of a 2D network's weights: ``torch.channels_last`` when asked for, else unchanged.

    Channels-last (NHWC) convolutions are the layout of GPU tensor cores and of oneDNN on CPU; a network whose
    weights are channels-last runs its convolutions and activations in that layout (a one-channel input is
    already both). 3D networks would need ``torch.channels_last_3d`` and are left as they are.

    Raises:
        ValueError: when ``channels_last`` is not a yes/no value.
    """
    return torch.channels_last if as_flag(channels_last, "channels_last") else torch.preserve_format
