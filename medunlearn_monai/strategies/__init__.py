"""Unlearning strategies, each an ignite handler attached to a stock MONAI SupervisedTrainer.

Published methods are compositions: SalUn = RandomRelabel + SaliencyMask, NegGrad+ = GradientAscent
on a mixed retain/forget loader, FT = no handler on a retain-only loader.
"""

from medunlearn_monai.strategies.gradient_ascent import GradientAscent
from medunlearn_monai.strategies.random_relabel import RandomRelabel
from medunlearn_monai.strategies.saliency_mask import SaliencyMask

__all__ = ["GradientAscent", "RandomRelabel", "SaliencyMask"]
