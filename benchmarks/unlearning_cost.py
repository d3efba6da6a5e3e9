"""What unlearning costs and what it reaches: every strategy of every bundle against exact retraining, in one run.

For each bundle (TissueMNIST, CheXpert, MRBrainS18) on small synthetic data: the original model, exact
retraining on the retain data and every strategy in ``configs/strategies/``, then one evaluation of each.
Per method: wall seconds of the workflow (config parsing, data caching and MLflow included), the engine
seconds and samples/second of the training loop (the record beside the model file), the speedup over exact
retraining (engine seconds, as MLflow's ``speedup_vs_retrain``, and wall seconds) and the quality reached
(``gap_to_retrain`` and the split metrics, from MLflow's comparison rows). The classifiers run their shipped
epochs; MRBrainS18 runs fewer than its shipped 100 / 20 epochs, in the same 5:1 ratio. Writes
benchmarks/results/unlearning_cost.{json,md}.

    python benchmarks/unlearning_cost.py                                  # about 12 minutes on 2 CPU cores
    python benchmarks/unlearning_cost.py --tissuemnist_train 4000 --chexpert_patients 600 \\
        --mrbrains18_subjects 9 --mrbrains18_test_subjects 200 201 --mrbrains18_epochs 100 20   # larger
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import add_results_dir, machine, markdown_table, write_results
from _workloads import (
    CHEXPERT,
    MRBRAINS18,
    MRBRAINS18_PRESETS,
    TISSUEMNIST,
    WorkflowTimer,
    chexpert_data,
    evaluate_models,
    make_models,
    model_cost,
    mrbrains18_data,
    run_title,
    tissuemnist_data,
    warm_up,
)

from medunlearn_monai.comparison import comparison_rows
from medunlearn_monai.workflows import strategies

BUNDLES = (TISSUEMNIST, CHEXPERT, MRBRAINS18)
COST_COLUMNS = (
    ("method", "method"),
    ("epochs", "epochs"),
    ("wall_seconds", "wall s"),
    ("seconds", "train loop s"),
    ("samples_per_second", "samples/s"),
    ("speedup_vs_retrain", "speedup"),
    ("wall_speedup_vs_retrain", "speedup (wall)"),
    ("evaluate_seconds", "evaluate s"),
    ("gap_to_retrain", "gap to retrain"),
)
QUALITY_COLUMNS = {
    "classification": (
        ("retain_acc", "retain acc"),
        ("forget_acc", "forget acc"),
        ("test_acc", "test acc"),
        ("mia_efficacy", "MIA"),
    ),
    "segmentation": (("retain_dice", "retain Dice"), ("forget_dice", "forget Dice"), ("test_dice", "test Dice")),
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", nargs="+", choices=BUNDLES, default=list(BUNDLES))
    parser.add_argument("--output_dir", default=None, help="work folder (default: a temporary one)")
    add_results_dir(parser)
    parser.add_argument("--results_name", default="unlearning_cost")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forget_fraction", type=float, default=0.1, help="classifiers: fraction of subjects")
    parser.add_argument("--tissuemnist_train", type=int, default=1000, help="training images (val 300, test 1000)")
    parser.add_argument("--chexpert_patients", type=int, default=240)
    parser.add_argument("--chexpert_image_size", type=int, default=48)
    parser.add_argument("--mrbrains18_preset", choices=sorted(MRBRAINS18_PRESETS), default="cpu")
    parser.add_argument("--mrbrains18_subjects", type=int, default=7, help="7 challenge IDs, then 200, 201, ...")
    parser.add_argument("--mrbrains18_test_subjects", nargs="+", default=["148"])
    parser.add_argument("--mrbrains18_forget_subject", default="4")
    parser.add_argument("--mrbrains18_depth", type=int, default=50)
    parser.add_argument(
        "--mrbrains18_epochs", type=int, nargs=2, default=[15, 3], metavar=("TRAIN", "UNLEARN"),
        help="epochs of train/retrain and of every strategy (shipped: 100 20)",
    )  # fmt: skip
    parser.add_argument(
        "--classifier_epochs", type=int, default=None,
        help="train/retrain epochs of TissueMNIST and CheXpert (default: shipped, 20); strategies keep theirs",
    )  # fmt: skip
    return parser.parse_args()


def workload(bundle: str, options: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Synthetic data, forget request and epoch overrides of one bundle."""
    seed = options.seed
    if bundle == MRBRAINS18:
        data = mrbrains18_data(work, options.mrbrains18_preset, options.mrbrains18_subjects,
                               options.mrbrains18_test_subjects, options.mrbrains18_depth, seed)  # fmt: skip
        (work / "request.txt").write_text(options.mrbrains18_forget_subject + "\n")
        train_epochs, unlearn_epochs = options.mrbrains18_epochs
        return {
            "data": data,
            "request": {"forget_request_file": str(work / "request.txt")},
            "train": {"max_epochs": train_epochs, "val_interval": train_epochs},
            "unlearn": {"unlearn_epochs": unlearn_epochs},
            "settings": {
                "preset": options.mrbrains18_preset,
                "subjects": options.mrbrains18_subjects,
                "test_subjects": options.mrbrains18_test_subjects,
                "depth": options.mrbrains18_depth,
                "forgotten": "1 subject",
                "train_epochs": train_epochs,
                "unlearn_epochs": unlearn_epochs,
            },
        }
    if bundle == CHEXPERT:
        data = chexpert_data(work, options.chexpert_patients, options.chexpert_image_size, seed=seed)
        settings = {"patients": options.chexpert_patients, "image_size": options.chexpert_image_size}
    else:
        data = tissuemnist_data(work, options.tissuemnist_train, seed=seed)
        settings = {"train_images": options.tissuemnist_train, "val_images": 300, "test_images": 1000}
    epochs = {"max_epochs": options.classifier_epochs} if options.classifier_epochs else {}
    return {
        "data": data,
        "request": {"forget_fraction": options.forget_fraction},
        "train": epochs,
        "unlearn": {},
        "settings": {
            **settings,
            "forgotten": f"{options.forget_fraction:.0%} of subjects",
            "train_epochs": options.classifier_epochs or "shipped (20)",
            "unlearn_epochs": "shipped",
        },
    }


def measure_bundle(bundle: str, options: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Make, evaluate and cost every model of one bundle; rows join MLflow's comparison with the model records."""
    started = time.perf_counter()
    job = workload(bundle, options, work)
    data_seconds = time.perf_counter() - started
    experiment = f"benchmark-cost-{bundle}"
    timer = WorkflowTimer(bundle, {**job["data"], "model_dir": str(work / "models"), "experiment_name": experiment})
    paths = make_models(timer, work / "models", strategies(bundle), job["request"], job["train"], job["unlearn"])
    evaluate_models(timer, paths, job["request"])
    wall = {method: timer.seconds[run_title(method)] for method in paths}
    rows = []
    for row in comparison_rows(experiment):
        method = row["method"]
        cost = model_cost(paths[method])
        rows.append({
            **row,
            **cost,
            "wall_seconds": wall[method],
            "evaluate_seconds": timer.seconds[f"evaluate {method}"],
            "wall_speedup_vs_retrain": None if method in ("original", "retrain") else wall["retrain"] / wall[method],
        })  # fmt: skip
    return {
        "bundle": bundle,
        "task": "segmentation" if bundle == MRBRAINS18 else "classification",
        "settings": job["settings"],
        "rows": rows,
        "data_seconds": data_seconds,
        "bundle_seconds": time.perf_counter() - started,
    }


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key.startswith("speedup") or key.startswith("wall_speedup"):
        return f"{value:.1f}x"
    if key.endswith("_acc") or key == "mia_efficacy":
        return f"{100 * value:.1f}"
    if key.endswith("_dice"):
        return f"{value:.3f}"
    if key == "samples_per_second":
        return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def closest(rows: list[dict[str, Any]]) -> str:
    """One line per bundle: the strategy closest to retraining and the fastest one."""
    strategies_rows = [row for row in rows if row.get("gap_to_retrain") is not None]
    if not strategies_rows:
        return "No strategy was scored against retraining."
    best = min(strategies_rows, key=lambda row: row["gap_to_retrain"])
    fastest = min(strategies_rows, key=lambda row: row["seconds"])
    return (
        f"Closest to retraining: {best['method']} (gap {best['gap_to_retrain']:.1f} points, "
        f"{cell('speedup_vs_retrain', best['speedup_vs_retrain'])}); fastest: {fastest['method']} "
        f"({cell('speedup_vs_retrain', fastest['speedup_vs_retrain'])}, gap {fastest['gap_to_retrain']:.1f} points)."
    )


def markdown(report: dict[str, Any]) -> str:
    sections = []
    for result in report["bundles"]:
        columns = COST_COLUMNS + QUALITY_COLUMNS[result["task"]]
        settings = ", ".join(f"{key} {value}" for key, value in result["settings"].items())
        sections.append(
            f"## {result['bundle']}\n\nSettings: {settings}. Bundle total {result['bundle_seconds'] / 60:.1f} min "
            f"(synthetic data {result['data_seconds']:.1f} s).\n\n"
            + markdown_table(result["rows"], columns, cell)
            + f"\n\n{closest(result['rows'])}\n"
        )
    load = report["load_average_5min"]
    return (
        "# Unlearning cost: every strategy of every bundle against exact retraining\n\n"
        f"Machine: {report['machine']}; 5-minute load average {load['start']:.2f} at the start, "
        f"{load['end']:.2f} at the end (other processes inflate the seconds). Whole run: "
        f"{report['total_seconds'] / 60:.1f} min (a {report['warm_up_seconds']:.1f} s untimed warm-up run first).\n\n"
        "Per method: *wall s* is the whole train/unlearn workflow (config, data loading and caching, MLflow, "
        "model writing); *train loop s* and *samples/s* are the training engine's own time and throughput "
        "(the record beside the model, MLflow's `unlearn_seconds`); *speedup* is retraining's train loop seconds "
        "over the method's (MLflow's `speedup_vs_retrain`), *speedup (wall)* the same for wall seconds; "
        "*evaluate s* is the wall time of the method's evaluation; *gap to retrain* is MLflow's `gap_to_retrain` "
        "(Avg. Gap in points over forget/retain/test accuracy and MIA, or over forget/retain/test Dice). "
        "Accuracies and MIA in percent. Synthetic data: the quality numbers say how close each method gets on "
        "these small sets, not on the real data sets.\n\n" + "\n".join(sections)
    )


def main() -> None:
    options = arguments()
    started = time.perf_counter()
    load_before = os.getloadavg()[1]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(options.output_dir or scratch)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        warm_up_seconds = warm_up(work / "warm_up")
        for bundle in options.bundles:
            results.append(measure_bundle(bundle, options, work / bundle))
    report = {
        "machine": machine(),
        "seed": options.seed,
        "bundles": results,
        "total_seconds": time.perf_counter() - started,
        "warm_up_seconds": warm_up_seconds,
        "load_average_5min": {"start": load_before, "end": os.getloadavg()[1]},
    }
    write_results(options.results_dir, options.results_name, report, markdown(report))


if __name__ == "__main__":
    main()
