"""Unlearning strategies, each an ignite handler attached to a stock MONAI SupervisedTrainer.

Published methods are compositions:

- SalUn = RandomRelabel + SaliencyMask;
- NegGrad+ = GradientAscent on a mixed retain/forget loader;
- FT = no handler on a retain-only loader;
- LearnNoise = NoisyLabel(noise_fraction=1.0) (forget inputs trained towards pure noise maps) and
  Noisy Label = NoisyLabel(noise_fraction < 1) (corrupted true maps), on a mixed loader;
- Learn Others = LearnOthers(donor_loader over retain items) on a mixed loader;
- Random Encoder = ReinitializeModules(["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]),
  then training on a retain-only loader;
- Fix Decoder = FreezeModules(["conv_seg"]) alongside the other handlers, so only the encoder learns;
- RUM = MemorisationRefinement(group_handlers=[[...], ...]) on a mixed loader: one phase per memorisation group;
- SCRUB = Scrub on a mixed loader;
- l1-sparse = L1Sparse on a retain-only loader;
- SSD = SelectiveSynapticDampening, no training loop;
- "<method>_stop" = the method plus StopBeforeOverForgetting, which ends the run before over-forgetting.
"""

from medunlearn_monai.strategies.freeze_modules import FreezeModules
from medunlearn_monai.strategies.gradient_ascent import GradientAscent
from medunlearn_monai.strategies.l1_sparse import L1Sparse
from medunlearn_monai.strategies.learn_others import LearnOthers
from medunlearn_monai.strategies.memorisation_refinement import MemorisationRefinement
from medunlearn_monai.strategies.noisy_label import NoisyLabel
from medunlearn_monai.strategies.random_relabel import RandomRelabel
from medunlearn_monai.strategies.reinitialize_modules import ReinitializeModules
from medunlearn_monai.strategies.saliency_mask import SaliencyMask
from medunlearn_monai.strategies.scrub import Scrub
from medunlearn_monai.strategies.selective_synaptic_dampening import SelectiveSynapticDampening
from medunlearn_monai.strategies.stop_before_overforgetting import StopBeforeOverForgetting

__all__ = [
    "FreezeModules",
    "GradientAscent",
    "L1Sparse",
    "LearnOthers",
    "MemorisationRefinement",
    "NoisyLabel",
    "RandomRelabel",
    "ReinitializeModules",
    "SaliencyMask",
    "Scrub",
    "SelectiveSynapticDampening",
    "StopBeforeOverForgetting",
]
