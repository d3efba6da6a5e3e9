"""The main job on synthetic data: train, retrain exactly, unlearn with every strategy, evaluate all."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medunlearn_monai import workflows
from medunlearn_monai.comparison import comparison_rows
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist

DEMO_BUNDLE = "tissuemnist_resnet_classification"


@dataclass
class DemoResult:
    """What a demo run produced: the comparison rows, the wall seconds of every step and in total."""

    rows: list[dict[str, Any]]
    step_seconds: dict[str, float]
    total_seconds: float
    models_dir: Path


def demo_steps(output_dir: Path, forget_fraction: float, strategies: Sequence[str]) -> list[tuple[str, dict]]:
    """The ordered workflows of the demo as ``(title, run_workflow arguments)``."""
    models = output_dir / "models"
    request = {"forget_fraction": forget_fraction}
    evaluated = [
        models / "model.pt",
        models / "retrained.pt",
        *(models / f"unlearned_{name}.pt" for name in strategies),
    ]
    return [
        ("train the original model", {"workflow": "train", "overwrite": True}),  # the demo's folder, fresh data
        ("retrain without the forgotten subjects (exact unlearning)", {"workflow": "train", **request}),
        *[(f"unlearn with {name}", {"workflow": "unlearn", "strategy": name, **request}) for name in strategies],
        *[
            (f"evaluate {path.stem}", {"workflow": "evaluate", "model_path": str(path), **request})
            for path in evaluated
        ],
    ]


def run_demo(
    output_dir: str | Path = "demo_output",
    forget_fraction: float = 0.1,
    seed: int = 0,
    experiment: str = "tissuemnist-demo",
    strategies: Sequence[str] | None = None,
) -> DemoResult:
    """Run every demo step on freshly written synthetic data and collect the comparison from MLflow."""
    output_dir = Path(output_dir)
    data_dir = output_dir / "data"
    write_synthetic_tissuemnist(data_dir / "tissuemnist.npz", seed=seed)
    shared = {
        "dataset_dir": str(data_dir),
        "model_dir": str(output_dir / "models"),
        "experiment_name": experiment,
        "seed": seed,
    }
    chosen = list(strategies or workflows.strategies(DEMO_BUNDLE))
    steps = demo_steps(output_dir, forget_fraction, chosen)
    step_seconds: dict[str, float] = {}
    started = time.perf_counter()
    for number, (title, arguments) in enumerate(steps, start=1):
        print(f"[{number}/{len(steps)}] {title}", flush=True)
        arguments = dict(arguments)
        step_started = time.perf_counter()
        workflows.run_workflow(
            DEMO_BUNDLE, arguments.pop("workflow"), arguments.pop("strategy", None), **shared, **arguments
        )
        step_seconds[title] = time.perf_counter() - step_started
    total = time.perf_counter() - started
    return DemoResult(comparison_rows(experiment), step_seconds, total, output_dir / "models")
