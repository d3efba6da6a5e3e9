"""CheXpert patient unlearning with per-sex analysis: exact retraining versus FT, RL and SalUn.

Two forget requests are compared: patients drawn at random, and patients drawn among women only
(does forgetting one group shift quality between the sexes?). For each request the original model,
the retrained model and every strategy are evaluated; the table gives retain / forget / test AUC per
sex, the female-minus-male test AUC gap, MIA efficacy and seconds. Results go to
benchmarks/results/chexpert_unlearning.{json,md}.

    python benchmarks/chexpert_unlearning.py                       # synthetic CheXpert tree
    python benchmarks/chexpert_unlearning.py --dataset_dir /data/CheXpert-v1.0-small --image_size 224
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import machine, markdown_table
from _workloads import CHEXPERT, chexpert_data

from medunlearn_monai.model_io import read_json
from medunlearn_monai.workflows import run_workflow, strategies

BUNDLE = CHEXPERT
RESULTS = Path(__file__).resolve().parent / "results"
REQUESTS = {"random": {}, "female": {"forget_where": {"sex": "Female"}}}
COLUMNS = (
    ("request", "request"),
    ("method", "method"),
    ("retain_auc_female", "retain AUC F"),
    ("retain_auc_male", "retain AUC M"),
    ("forget_auc_female", "forget AUC F"),
    ("forget_auc_male", "forget AUC M"),
    ("test_auc_female", "test AUC F"),
    ("test_auc_male", "test AUC M"),
    ("test_auc_gap", "test AUC F-M"),
    ("forget_acc", "forget acc"),
    ("mia_efficacy", "MIA"),
    ("gap_to_retrain", "Avg. Gap"),
    ("seconds", "seconds"),
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", default=None, help="a CheXpert folder (default: a synthetic tree)")
    parser.add_argument("--output_dir", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--patients", type=int, default=240, help="patients of the synthetic tree")
    parser.add_argument("--image_size", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--train_epochs", type=int, default=20)
    parser.add_argument("--forget_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def run_requests(options: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    data = chexpert_data(
        work, options.patients, options.image_size, options.batch_size, options.seed, options.dataset_dir
    )
    models = work / "models"
    shared = {**data, "model_dir": str(models), "experiment_name": "benchmark-chexpert"}
    print("== train original", flush=True)
    run_workflow(BUNDLE, "train", **shared, max_epochs=options.train_epochs)
    rows = []
    for request_name, attributes in REQUESTS.items():
        request = {"forget_fraction": options.forget_fraction, **attributes}
        retrained = models / f"retrained_{request_name}.pt"
        print(f"== {request_name} request: retrain", flush=True)
        run_workflow(BUNDLE, "train", **shared, **request, max_epochs=options.train_epochs,
                     output_model=str(retrained))  # fmt: skip
        evaluated = [("original", models / "model.pt"), ("retrain", retrained)]
        for name in strategies(BUNDLE):
            path = models / f"unlearned_{name}_{request_name}.pt"
            print(f"== {request_name} request: {name}", flush=True)
            run_workflow(BUNDLE, "unlearn", name, **shared, **request, output_model=str(path))
            evaluated.append((name, path))
        for method, path in evaluated:
            print(f"== {request_name} request: evaluate {method}", flush=True)
            run_workflow(BUNDLE, "evaluate", **shared, **request, model_path=str(path),
                         retrained_model=str(retrained))  # fmt: skip
            metrics = read_json(path.with_suffix(".eval.json"))
            seconds = read_json(path.with_suffix(".json"))["seconds"]
            rows.append({"request": request_name, "method": method, **metrics, "seconds": seconds})
    return rows


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("seconds", "gap_to_retrain"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    table = markdown_table(report["rows"], COLUMNS, cell)
    settings = report["settings"]
    return (
        "# CheXpert patient unlearning with per-sex analysis\n\n"
        f"Machine: {report['machine']}\n\n"
        f"Data: {settings['data']}; ResNet-18, {settings['image_size']} px, original and retrained models "
        f"{settings['train_epochs']} epochs; requests forget {settings['forget_fraction']:.0%} of the training "
        "patients, drawn among all patients (random) or among women only (female). AUC is the mean over the five "
        "competition observations; F-M is the female minus male test AUC; a dash is a group absent from a split. "
        f"Whole run: {report['total_seconds'] / 60:.1f} min.\n\n" + table + "\n"
    )


def main() -> None:
    options = arguments()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(options.output_dir or scratch)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        rows = run_requests(options, work)
    data = options.dataset_dir or f"synthetic CheXpert tree, {options.patients} patients"
    settings = {"data": data, **{key: getattr(options, key) for key in
                                 ("image_size", "train_epochs", "forget_fraction", "seed")}}  # fmt: skip
    report = {"machine": machine(), "settings": settings, "rows": rows, "total_seconds": time.perf_counter() - started}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chexpert_unlearning.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "chexpert_unlearning.md").write_text(markdown(report))
    print((RESULTS / "chexpert_unlearning.md").read_text())


if __name__ == "__main__":
    main()
