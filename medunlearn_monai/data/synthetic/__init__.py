"""Writers of small synthetic data sets in exactly the on-disk formats of the real sources."""

from medunlearn_monai.data.synthetic.chexpert import write_synthetic_chexpert
from medunlearn_monai.data.synthetic.mrbrains18 import MRBRAINS18_SUBJECT_IDS, write_synthetic_mrbrains18
from medunlearn_monai.data.synthetic.tissuemnist import N_CLASSES, write_synthetic_tissuemnist

__all__ = [
    "MRBRAINS18_SUBJECT_IDS",
    "N_CLASSES",
    "write_synthetic_chexpert",
    "write_synthetic_mrbrains18",
    "write_synthetic_tissuemnist",
]
