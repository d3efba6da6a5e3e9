"""The synthetic TissueMNIST data of the classification benchmarks: one size, one generator seed, written once."""

from __future__ import annotations

from pathlib import Path

from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist

N_TRAIN, N_VAL, N_TEST, GENERATOR_SEED = 600, 100, 300, 0
SYNTHETIC_SIZES = f"train {N_TRAIN}, val {N_VAL}, test {N_TEST}, 28 px, generator seed {GENERATOR_SEED}"


def write_synthetic_arm(path: Path) -> Path:
    """Write the benchmarks' synthetic TissueMNIST file at ``path`` unless it is already there."""
    if not path.is_file():
        write_synthetic_tissuemnist(path, N_TRAIN, N_VAL, N_TEST, seed=GENERATOR_SEED)
    return path
