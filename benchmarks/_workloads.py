"""What the benchmarks that run bundle workflows share: synthetic data per bundle and timed workflow runs.

Each ``*_data`` function writes a bundle's synthetic data into a work folder and returns the overrides that
point the bundle at it; :class:`WorkflowTimer` runs workflows with those overrides and keeps their wall
seconds; :func:`make_models` and :func:`evaluate_models` run the job's order (original, exact retraining,
every strategy, then evaluations with the retrained model evaluated before the strategies it scores).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medunlearn_monai.data.synthetic import (
    write_synthetic_chexpert,
    write_synthetic_mrbrains18,
    write_synthetic_tissuemnist,
)
from medunlearn_monai.records import read_record
from medunlearn_monai.workflows import run_workflow

TISSUEMNIST = "tissuemnist_resnet_classification"
CHEXPERT = "chexpert_resnet_classification"
MRBRAINS18 = "mrbrains18_med3d_segmentation"
MRBRAINS18_PRESETS = {
    # 2 CPU cores: half the in-plane resolution and a 48x48x24 crop.
    "cpu": {"spacing": [1.916, 1.916, 3.0], "roi_size": [48, 48, 24], "sw_batch_size": 4},
    "gpu": {"spacing": [0.958, 0.958, 3.0], "roi_size": [96, 96, 32], "sw_batch_size": 8},
}


def tissuemnist_data(work: Path, n_train: int = 1000, n_val: int = 300, n_test: int = 1000, seed: int = 0) -> dict:
    """Synthetic TissueMNIST (``work/data/tissuemnist.npz``); the overrides that point the bundle at it."""
    write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train, n_val, n_test, seed=seed)
    return {"dataset_dir": str(work / "data"), "seed": seed}


def chexpert_data(
    work: Path, patients: int = 240, image_size: int = 48, batch_size: int = 32, seed: int = 0, dataset_dir=None
) -> dict:
    """A synthetic CheXpert tree of ``patients`` (unless ``dataset_dir`` names a real one); the bundle's overrides."""
    data = Path(dataset_dir) if dataset_dir else work / "data" / "CheXpert-v1.0-small"
    if not dataset_dir:
        write_synthetic_chexpert(data, n_patients=patients, size=64, seed=seed)
    return {"dataset_dir": str(data), "image_size": image_size, "batch_size": batch_size, "seed": seed}


def mrbrains18_data(
    work: Path,
    preset: str = "cpu",
    subjects: int = 9,
    test_subjects: Sequence[str] = ("200", "201"),
    depth: int = 50,
    seed: int = 0,
) -> dict:
    """Synthetic MRBrainS18 subjects at a preset's spacing (``work/data``); the bundle's overrides for them."""
    settings = MRBRAINS18_PRESETS[preset]
    write_synthetic_mrbrains18(work / "data", subjects, tuple(settings["spacing"]), seed=seed)
    return {
        "dataset_dir": str(work / "data"),
        "depth": depth,
        "pixdim": settings["spacing"],
        "roi_size": settings["roi_size"],
        "sw_batch_size": settings["sw_batch_size"],
        "test_subjects": list(test_subjects),
        "seed": seed,
    }


@dataclass
class WorkflowTimer:
    """Run workflows of ``bundle`` with shared ``overrides``; ``seconds[title]`` is each run's wall time."""

    bundle: str
    overrides: Mapping[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(self, title: str, workflow: str, strategy: str | None = None, **overrides: Any) -> float:
        print(f"== {self.bundle}: {title}", flush=True)
        started = time.perf_counter()
        run_workflow(self.bundle, workflow, strategy, **{**self.overrides, **overrides})
        self.seconds[title] = time.perf_counter() - started
        return self.seconds[title]


def warm_up(work: Path) -> float:
    """One tiny TissueMNIST training epoch before anything is timed; returns its wall seconds.

    A process's first workflow pays for lazy imports, first calls into torch and MONAI and the creation of the
    MLflow store's tables (several seconds); this keeps that off the first timed run.
    """
    data = tissuemnist_data(work, n_train=64, n_val=32, n_test=32)
    timer = WorkflowTimer(TISSUEMNIST, {**data, "model_dir": str(work / "models"), "experiment_name": "warm-up"})
    return timer("warm-up", "train", max_epochs=1)


def run_title(method: str, tag: str = "") -> str:
    """The :class:`WorkflowTimer` title under which :func:`make_models` made the model of ``method``."""
    if method == "original":
        return "train original"
    return f"{'train' if method == 'retrain' else 'unlearn'} {method}{tag}"


def make_models(
    timer: WorkflowTimer,
    models: Path,
    strategies: Sequence[str],
    request: Mapping[str, Any],
    train: Mapping[str, Any] | None = None,
    unlearn: Mapping[str, Any] | None = None,
    tag: str = "",
    original: bool = True,
) -> dict[str, Path]:
    """Train the original model (unless ``original`` is false), retrain exactly and unlearn with each strategy.

    ``train`` overrides train and retrain, ``unlearn`` every strategy; ``tag`` is appended to the retrained and
    unlearned file names (and to the timer's titles) so that several requests share one original model.
    Returns ``{method: model path}`` in the order made; :func:`run_title` gives each run's title in the timer.
    """
    train, unlearn = dict(train or {}), dict(unlearn or {})
    paths = {"original": models / "model.pt", "retrain": models / f"retrained{tag}.pt"}
    if original:
        timer(run_title("original"), "train", **train)
    timer(run_title("retrain", tag), "train", **request, **train, output_model=str(paths["retrain"]))
    for name in strategies:
        paths[name] = models / f"unlearned_{name}{tag}.pt"
        timer(run_title(name, tag), "unlearn", name, **request, **unlearn, output_model=str(paths[name]))
    return paths


def evaluate_models(timer: WorkflowTimer, paths: Mapping[str, Path], request: Mapping[str, Any], tag: str = "") -> None:
    """Evaluate each model for ``request`` against ``paths['retrain']``, the original and retrained models first.

    The strategies' scores (gap to retrain, Dice kept) read those two evaluations.
    """
    ordered = sorted(paths, key=lambda method: method not in ("original", "retrain"))
    for method in ordered:
        timer(f"evaluate {method}{tag}", "evaluate", **request, model_path=str(paths[method]),
              retrained_model=str(paths["retrain"]))  # fmt: skip


def model_cost(path: Path) -> dict[str, Any]:
    """Engine seconds, epochs and samples/second of a model, from the record written beside it."""
    record = read_record(path)
    return {key: record.get(key) for key in ("seconds", "epochs", "samples_per_second")}
