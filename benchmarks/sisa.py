"""Sharded training (SISA) on TissueMNIST: ensemble accuracy versus one model, and the cost of forgetting.

Trains one model (train.json) and a sharded ensemble (sisa.json), then for requests of 1, 10 and 100 subjects
runs exact retraining of the single model and SISA unlearning (retraining only the shards that held a forgotten
subject, from their first changed slice). Reports test accuracy of every model, seconds, the retrained shards and
stages, and the cost ratio SISA unlearning / full retraining. Targets (issue 7): forgetting one subject costs at
most 1/S of full retraining plus overhead; the S=5 ensemble's test accuracy is within 3 points of the single
model's. Results: benchmarks/results/sisa.{json,md}.

    python benchmarks/sisa.py [--n_train 3000 --max_epochs 12 --shards 5 --slices 3 --output_dir /tmp/sisa-bench]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import add_results_dir, machine, markdown_table, write_results

from medunlearn_monai.data.medmnist import load_medmnist_items
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.records import read_json
from medunlearn_monai.workflows import config_value, run_workflow

BUNDLE = "tissuemnist_resnet_classification"
COLUMNS = (
    ("request", "forgotten subjects"),
    ("method", "method"),
    ("test_acc", "test acc"),
    ("forget_acc", "forget acc"),
    ("seconds", "seconds"),
    ("ratio_to_full_retrain", "cost / full retrain"),
    ("retrained_shards", "retrained shards"),
    ("trained_stages", "stages trained"),
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default=None, help="work folder (default: a temporary one)")
    add_results_dir(parser)
    parser.add_argument("--n_train", type=int, default=3000)
    parser.add_argument("--n_test", type=int, default=1000)
    parser.add_argument("--max_epochs", type=int, default=12, help="epochs of the single model; SISA: per slice / R")
    parser.add_argument("--shards", type=int, default=5)
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--requests", type=int, nargs="+", default=[1, 10, 100], help="subjects per request")
    parser.add_argument(
        "--other_shards", type=int, nargs="*", default=[2, 10], help="more values of S for the accuracy trade-off"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def timed(bundle_workflow: tuple[str, str | None], **overrides: Any) -> float:
    """Wall seconds of one workflow run in this process."""
    started = time.perf_counter()
    run_workflow(BUNDLE, *bundle_workflow, **overrides)
    return time.perf_counter() - started


def evaluation(shared: dict[str, Any], path: Path, strategy: str | None, **request: Any) -> dict[str, Any]:
    run_workflow(BUNDLE, "evaluate", strategy, **shared, **request, model_path=str(path))
    return read_json(path.with_suffix(".eval.json"))


def run(options: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", options.n_train, 300, options.n_test)
    models = work / "models"
    shared = {
        "dataset_dir": str(data.parent),
        "model_dir": str(models),
        "max_epochs": options.max_epochs,
        "sisa_shards": options.shards,
        "sisa_slices": options.slices,
        "seed": options.seed,
        "experiment_name": "benchmark-sisa",
    }
    print("== train one model and the sharded ensemble", flush=True)
    single_seconds = timed(("train", None), **shared)
    sisa_seconds = timed(("train", "sisa"), **shared)
    rows = [
        {
            "request": 0,
            "method": "single model",
            **evaluation(shared, models / "model.pt", None),
            "seconds": single_seconds,
        },
        {
            "request": 0,
            "method": f"SISA S={options.shards} R={options.slices}",
            **evaluation(shared, models / "sisa.pt", "sisa"),
            "seconds": sisa_seconds,
            **_sisa_cost(models / "sisa.json"),
        },
    ]
    for shards in options.other_shards:
        print(f"== sharded ensemble with S={shards}", flush=True)
        folder = {**shared, "sisa_shards": shards, "model_dir": str(work / f"models_s{shards}")}
        seconds = timed(("train", "sisa"), **folder)
        path = Path(folder["model_dir"]) / "sisa.pt"
        trade_off = {"request": 0, "method": f"SISA S={shards} R={options.slices}", "seconds": seconds}
        rows.append({**trade_off, **_sisa_cost(path.with_suffix(".json")), **evaluation(folder, path, "sisa")})
    subjects = [item["subject"] for item in load_medmnist_items(data, "train")]
    for count in options.requests:
        request_file = work / f"request_{count}.txt"
        request_file.write_text("\n".join(random.Random(options.seed + count).sample(subjects, count)) + "\n")
        request = {"forget_request_file": str(request_file)}
        retrained, unlearned = models / f"retrained_{count}.pt", models / f"unlearned_sisa_{count}.pt"
        print(f"== forget {count} subject(s): full retraining, then SISA unlearning", flush=True)
        retrain_seconds = timed(("train", None), **shared, **request, output_model=str(retrained))
        unlearn_seconds = timed(("unlearn", "sisa"), **shared, **request, output_model=str(unlearned))
        reference = {"retrained_model": str(retrained)}
        retrained_metrics = evaluation(shared, retrained, None, **request, **reference)
        rows.append({"request": count, "method": "full retrain", "seconds": retrain_seconds, **retrained_metrics})
        rows.append(
            {
                "request": count,
                "method": "SISA unlearn",
                "seconds": unlearn_seconds,
                "ratio_to_full_retrain": unlearn_seconds / retrain_seconds,
                **_sisa_cost(unlearned.with_suffix(".json")),
                **evaluation(shared, unlearned, "sisa", **request, **reference),
            }
        )
    return {"single_seconds": single_seconds, "sisa_seconds": sisa_seconds, "rows": rows}


def _sisa_cost(record_file: Path) -> dict[str, Any]:
    sisa = read_json(record_file)["sisa"]
    return {"retrained_shards": len(sisa["retrained_shards"]), "trained_stages": sisa["trained_stages"]}


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("test_acc", "forget_acc"):
        return f"{100 * value:.1f}"
    if key == "seconds":
        return f"{value:.1f}"
    if key == "ratio_to_full_retrain":
        return f"{value:.2f}"
    return str(value)


def targets(report: dict[str, Any], options: argparse.Namespace) -> dict[str, bool]:
    rows = report["rows"]
    single, ensemble = rows[0], rows[1]
    met = {
        f"ensemble_test_acc_within_3_points_at_S={options.shards}": single["test_acc"] - ensemble["test_acc"] <= 0.03
    }
    one = [row for row in rows if row["request"] == 1 and row["method"] == "SISA unlearn"]
    if one:
        # Overhead: loading the data, hashing slices and checkpoints, assembling and saving the ensemble.
        met["one_subject_costs_at_most_1/S_of_retraining_plus_overhead"] = one[0]["ratio_to_full_retrain"] <= (
            1 / options.shards + 0.1
        )
    return met


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    met = "\n".join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in report["targets_met"].items())
    return (
        "# Sharded training (SISA) on TissueMNIST\n\n"
        f"Machine: {report['machine']}\n\n"
        f"Synthetic TissueMNIST-format data: {settings['n_train']} training images (one subject each), "
        f"{settings['n_test']} test images; ResNet-18. The single model trains {settings['max_epochs']} epochs; "
        f"the ensemble has S={settings['shards']} shards of R={settings['slices']} slices, "
        f"{max(1, settings['max_epochs'] // settings['slices'])} epochs per slice stage and a batch of "
        f"{settings['sisa_batch_size']} (the bundle's default: about as many steps per epoch as the single model's "
        f"{settings['batch_size']}). Rows with another S show the accuracy trade-off. 'full retrain' is exact "
        "retraining of the single model without the request's subjects; 'SISA unlearn' retrains only the shards "
        "that held one, from their first changed slice. Seconds are wall time of the workflow in one process "
        "(data loading, validation and model writing included). "
        f"Whole run: {report['total_seconds'] / 60:.1f} min.\n\n"
        + markdown_table(report["rows"], COLUMNS, cell)
        + f"\n\nTargets (1/S + 0.1 of retraining allowed for the fixed overhead):\n{met}\n"
    )


def main() -> None:
    options = arguments()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(options.output_dir or scratch)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        os.environ.setdefault("MEDUNLEARN_SALT", "benchmark-salt")
        report = run(options, work)
    batch_size = config_value(BUNDLE, "batch_size")
    report.update(
        machine=machine(),
        settings={
            **{key: value for key, value in vars(options).items() if key not in ("output_dir", "results_dir")},
            "batch_size": batch_size,
            "sisa_batch_size": max(min(batch_size, 16), batch_size // options.shards),
        },
        total_seconds=time.perf_counter() - started,
    )
    report["targets_met"] = targets(report, options)
    write_results(options.results_dir, "sisa", report, markdown(report))


if __name__ == "__main__":
    main()
