"""medunlearn-monai: machine unlearning for clinical imaging models, shipped as MONAI bundles."""

__version__ = "0.1.0"
