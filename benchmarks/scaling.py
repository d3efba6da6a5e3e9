"""How the cost of training, exact retraining, every strategy and one evaluation grows with the data.

On synthetic TissueMNIST: wall seconds of train, exact retrain, each strategy's unlearn and one evaluation
(of the retrained model: retain, forget and test splits plus the membership-inference attacks) versus the
training-set size (forget fraction fixed), and versus the forget fraction at one training-set size. Every
training workflow (train, retrain and each strategy) runs the same small number of epochs (``--epochs``, set
by override: the shipped 20 training epochs would not fit 16k items into minutes on a CPU), so the lines
compare the cost per epoch; ``--shipped_unlearn_epochs`` keeps each strategy's own. Writes
benchmarks/results/scaling.{json,md} and the plot scaling.png.

    python benchmarks/scaling.py                                        # about 12 minutes on 2 CPU cores
    python benchmarks/scaling.py --train_sizes 1000 4000 16000 64000 --epochs 2   # larger
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import add_results_dir, machine, markdown_table, write_results
from _workloads import TISSUEMNIST, WorkflowTimer, make_models, model_cost, run_title, tissuemnist_data, warm_up

from medunlearn_monai.records import read_record
from medunlearn_monai.workflows import strategies

EXPERIMENT = "benchmark-scaling"
NAMES = {"original": "train (original)", "retrain": "exact retrain", "evaluate": "evaluate (retrained model)"}
RUN_COLUMNS = (
    ("train_items", "train items"),
    ("forget_fraction", "forget"),
    ("forget_items", "forget items"),
    ("method", "method"),
    ("epochs", "epochs"),
    ("wall_seconds", "wall s"),
    ("seconds", "train loop s"),
    ("samples_per_second", "samples/s"),
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--forget_fraction", type=float, default=0.1, help="forget fraction of the size sweep")
    parser.add_argument("--forget_fractions", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2])
    parser.add_argument("--forget_sweep_size", type=int, default=4000, help="training items of the forget sweep")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of training and of every strategy")
    parser.add_argument(
        "--shipped_unlearn_epochs", action="store_true", help="strategies keep their own epochs (2; GA 10)"
    )
    parser.add_argument("--val_items", type=int, default=300)
    parser.add_argument("--test_items", type=int, default=1000)
    parser.add_argument("--strategies", nargs="+", default=strategies(TISSUEMNIST))
    parser.add_argument("--output_dir", default=None, help="work folder (default: a temporary one)")
    add_results_dir(parser)
    parser.add_argument("--results_name", default="scaling")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def measure_size(options: argparse.Namespace, work: Path, train_items: int, fractions: list[float]) -> list[dict]:
    """Train one original on ``train_items`` images; per forget fraction retrain, unlearn and evaluate once."""
    data = tissuemnist_data(work, train_items, options.val_items, options.test_items, options.seed)
    models = work / "models"
    timer = WorkflowTimer(TISSUEMNIST, {**data, "model_dir": str(models), "experiment_name": EXPERIMENT})
    train = {"max_epochs": options.epochs}
    unlearn = {} if options.shipped_unlearn_epochs else {"unlearn_epochs": options.epochs}
    rows = []
    for number, fraction in enumerate(fractions):
        tag = f"_f{fraction:g}"
        request = {"forget_fraction": fraction}
        paths = make_models(timer, models, options.strategies, request, train, unlearn, tag, original=number == 0)
        timer(f"evaluate retrain{tag}", "evaluate", **request, model_path=str(paths["retrain"]),
              retrained_model=str(paths["retrain"]))  # fmt: skip
        point = {
            "train_items": train_items,
            "forget_fraction": fraction,
            "forget_items": read_record(paths["retrain"]).get("forget_subjects"),
        }
        for method, path in paths.items():
            if method == "original" and number:
                continue
            wall = timer.seconds[run_title(method, tag)]
            rows.append({**point, "method": method, "wall_seconds": wall, **model_cost(path)})
        rows.append({**point, "method": "evaluate", "wall_seconds": timer.seconds[f"evaluate retrain{tag}"]})
    return rows


def points(rows: list[dict[str, Any]], method: str, sweep: str, key: str, scale: float = 1.0) -> tuple[list, list]:
    """``(x, wall seconds)`` of one method along one sweep, sorted by x."""
    pairs = sorted((scale * row[key], row["wall_seconds"]) for row in rows
                   if row["method"] == method and sweep in row["sweeps"])  # fmt: skip
    return [x for x, _ in pairs], [seconds for _, seconds in pairs]


def plot(rows: list[dict[str, Any]], options: argparse.Namespace, path: Path) -> None:
    """Two panels: wall seconds versus training items (log-log) and versus forget fraction; one line per method.

    The original model is trained once for the forget sweep: a dotted line there.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_size, by_fraction) = plt.subplots(1, 2, figsize=(12, 4.8))
    for number, method in enumerate(dict.fromkeys(row["method"] for row in rows)):
        color = f"C{number % 10}"
        by_size.plot(*points(rows, method, "train_size", "train_items"), marker="o", color=color,
                     label=NAMES.get(method, method))  # fmt: skip
        fractions, seconds = points(rows, method, "forget_fraction", "forget_fraction", 100.0)
        if method == "original" and seconds:
            by_fraction.axhline(seconds[0], color=color, linestyle=":")
        elif seconds:
            by_fraction.plot(fractions, seconds, marker="o", color=color)
    by_size.set(xscale="log", yscale="log", xlabel="training items", ylabel="wall seconds",
                title=f"forget {options.forget_fraction:.0%}, {options.epochs} epoch(s)")  # fmt: skip
    by_fraction.set(xlabel="forget fraction (% of training subjects)", ylabel="wall seconds",
                    title=f"{options.forget_sweep_size} training items")  # fmt: skip
    by_size.set_xticks(sorted(set(options.train_sizes)), [str(size) for size in sorted(set(options.train_sizes))])
    by_size.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    by_size.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    by_fraction.set_xticks([100 * fraction for fraction in options.forget_fractions])
    for axis in (by_size, by_fraction):
        axis.grid(True, which="both", alpha=0.3)
    by_size.legend(fontsize="small")
    figure.suptitle("TissueMNIST (synthetic), ResNet-18: wall seconds versus data size")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "forget_fraction":
        return f"{100 * value:g}%"
    if key == "samples_per_second":
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def pivot(rows: list[dict[str, Any]], sweep: str, key: str) -> str:
    """Wall seconds, one row per method, one column per value of the swept ``key``."""
    chosen = [row for row in rows if sweep in row["sweeps"] and (sweep == "train_size" or row["method"] != "original")]
    values = sorted({row[key] for row in chosen})
    table = []
    for method in dict.fromkeys(row["method"] for row in chosen):
        cells = {row[key]: row["wall_seconds"] for row in chosen if row["method"] == method}
        table.append({"method": NAMES.get(method, method), **{str(value): cells.get(value) for value in values}})
    title = (lambda value: f"{value} items") if key == "train_items" else (lambda value: f"forget {100 * value:g}%")
    return markdown_table(table, [("method", "method"), *((str(v), title(v)) for v in values)], cell)


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    load = report["load_average_5min"]
    original = [row for row in report["rows"] if row["method"] == "original" and "forget_fraction" in row["sweeps"]]
    original_seconds = f"{original[0]['wall_seconds']:.1f}" if original else "-"
    unlearn_epochs = "their shipped epochs" if settings["shipped_unlearn_epochs"] else f"{settings['epochs']}"
    return (
        "# Scaling: cost versus training-set size and forget-set size (TissueMNIST, synthetic)\n\n"
        f"Machine: {report['machine']}; 5-minute load average {load['start']:.2f} at the start, {load['end']:.2f} "
        f"at the end. Whole run: {report['total_seconds'] / 60:.1f} min (a {report['warm_up_seconds']:.1f} s untimed "
        "warm-up run first).\n\n"
        f"Settings: ResNet-18 on 28 x 28 synthetic TissueMNIST ({settings['val_items']} validation and "
        f"{settings['test_items']} test images at every size); train and exact retrain {settings['epochs']} "
        f"epoch(s), strategies {unlearn_epochs}; one evaluation per point, of the retrained model (retain, "
        "forget and test splits, SVC and loss-threshold attacks). Seconds are the wall time of each workflow "
        "(config, data, caching, MLflow and model writing included); the JSON also holds the training loop's own "
        "seconds and samples/s from the model records. The forget sweep reuses one original model "
        f"({original_seconds} s to train).\n\n"
        f"![seconds versus data size]({report['plot']})\n\n"
        f"## Versus training-set size (forget {settings['forget_fraction']:.0%})\n\n"
        + pivot(report["rows"], "train_size", "train_items")
        + f"\n\n## Versus forget fraction ({settings['forget_sweep_size']} training items)\n\n"
        + pivot(report["rows"], "forget_fraction", "forget_fraction")
        + "\n\n## Every run\n\n"
        + markdown_table(report["rows"], RUN_COLUMNS, cell)
        + "\n"
    )


def main() -> None:
    options = arguments()
    started = time.perf_counter()
    load_before = os.getloadavg()[1]
    sizes = sorted(set(options.train_sizes) | {options.forget_sweep_size})
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(options.output_dir or scratch)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        warm_up_seconds = warm_up(work / "warm_up")
        for size in sizes:
            fractions = [options.forget_fraction] if size in options.train_sizes else []
            if size == options.forget_sweep_size:
                fractions += [f for f in options.forget_fractions if f not in fractions]
            for row in measure_size(options, work / f"train_{size}", size, fractions):
                in_size_sweep = size in options.train_sizes and row["forget_fraction"] == options.forget_fraction
                in_fraction_sweep = size == options.forget_sweep_size and (
                    row["forget_fraction"] in options.forget_fractions or row["method"] == "original"
                )
                sweeps = [name for name, inside in (("train_size", in_size_sweep),
                                                    ("forget_fraction", in_fraction_sweep)) if inside]  # fmt: skip
                rows.append({"sweeps": sweeps, **row})
    options.results_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, options, options.results_dir / f"{options.results_name}.png")
    settings = {key: getattr(options, key) for key in ("train_sizes", "forget_fraction", "forget_fractions",
                "forget_sweep_size", "epochs", "shipped_unlearn_epochs", "val_items", "test_items", "strategies",
                "seed")}  # fmt: skip
    report = {
        "machine": machine(),
        "settings": settings,
        "rows": rows,
        "total_seconds": time.perf_counter() - started,
        "warm_up_seconds": warm_up_seconds,
        "load_average_5min": {"start": load_before, "end": os.getloadavg()[1]},
        "plot": f"{options.results_name}.png",
    }
    write_results(options.results_dir, options.results_name, report, markdown(report))


if __name__ == "__main__":
    main()
