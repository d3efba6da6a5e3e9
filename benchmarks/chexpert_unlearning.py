"""CheXpert patient unlearning with per-sex analysis, through the protocol: several seeds and a noise floor.

Two forget requests are compared: patients drawn at random, and patients drawn among women only
(does forgetting one group shift quality between the sexes?). Each runs
``medunlearn_monai.studies.run_protocol`` (per seed: original, exact retraining, a second retraining
with another seed as the noise floor, FT, RL and SalUn, all evaluated); the report gives, per
request and method, the female-minus-male test AUC (``test_auc_gap``), per-sex test AUC, Avg. Gap
and speedup as mean ± std over seeds. Seeds are added one at a time and the results rewritten after
each; a re-run resumes. Results: benchmarks/results/chexpert_unlearning.{json,md}.

    python benchmarks/chexpert_unlearning.py --work_dir benchmarks/work/chexpert     # synthetic CheXpert tree
    python benchmarks/chexpert_unlearning.py --dataset_dir /data/CheXpert-v1.0-small --image_size 224
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _loop_time import loop_seconds
from _report import add_results_dir, machine, markdown_table
from _workloads import CHEXPERT, chexpert_data

from medunlearn_monai.studies import run_protocol
from medunlearn_monai.studies.protocol import ProtocolResult

BUNDLE = CHEXPERT
STRATEGIES = ("ft", "rl", "salun")
REQUESTS = {"random": {}, "female": {"forget_where": {"sex": "Female"}}}
METHODS = ("original", "retrain", "noise_floor", *STRATEGIES)
METRICS = {
    "test_auc_gap": "test AUC F-M",
    "test_auc_female": "test AUC F",
    "test_auc_male": "test AUC M",
    "test_auc": "test AUC",
    "forget_acc": "forget acc",
    "gap_to_retrain": "Avg. Gap",
    "speedup_incl_tuning": "speedup",
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", default=None, help="a CheXpert folder (default: a synthetic tree)")
    parser.add_argument("--work_dir", type=Path, default=Path("benchmarks/work/chexpert"))
    parser.add_argument("--patients", type=int, default=240, help="patients of the synthetic tree")
    parser.add_argument("--image_size", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--train_epochs", type=int, default=20)
    parser.add_argument("--forget_fraction", type=float, default=0.1)
    parser.add_argument("--seeds", default="0,1,2")
    add_results_dir(parser)
    return parser.parse_args()


def request_report(result: ProtocolResult, work: Path) -> dict[str, Any]:
    """Mean and std over seeds of every reported metric, per method, at the request's fraction."""
    entries = result.summary[f"{result.fractions[0]:g}"]
    return {
        "seeds": result.seeds,
        "methods": {
            method: {
                f"{metric}_{suffix}": entries.get(method, {}).get(f"{metric}_{suffix}")
                for metric in METRICS
                for suffix in ("mean", "std")
            }
            for method in METHODS
        },
        "loop_seconds": loop_seconds(work),
        "mlflow_run_id": result.run_id,
    }


def cell(key: str, value: Any) -> str:
    return "-" if value is None else str(value)


def _pm(entry: Mapping[str, Any], metric: str) -> str:
    mean, std = entry.get(f"{metric}_mean"), entry.get(f"{metric}_std")
    if mean is None:
        return "-"
    digits = 1 if metric in ("gap_to_retrain", "speedup_incl_tuning") else 3
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def markdown(report: Mapping[str, Any]) -> str:
    rows = [
        {"request": name, "method": method, **{metric: _pm(entry, metric) for metric in METRICS}}
        for name, request in report["requests"].items()
        for method, entry in request["methods"].items()
    ]
    settings = report["settings"]
    seeds = ", ".join(map(str, next(iter(report["requests"].values()))["seeds"]))
    return (
        "# CheXpert patient unlearning with per-sex analysis (several seeds)\n\n"
        f"Machine: {report['machine']}\n\n"
        f"Data: {settings['data']}; ResNet-18, {settings['image_size']} px, original and retrained models "
        f"{settings['train_epochs']} epochs; requests forget {settings['forget_fraction']:.0%} of the training "
        "patients, drawn among all patients (random) or among women only (female). Mean ± std over seeds "
        f"{seeds} (model initialisation, data order and request drawn from the seed). AUC is the mean over the "
        "five competition observations; F-M is the female minus male test AUC. `noise_floor` is a second exact "
        "retraining (seed + 1000) scored against the first; a difference between methods smaller than the "
        "spread over seeds is no difference. Strategy values were set by hand (not tuned), so no tuning is "
        "billed. Training and unlearning loops of all models together: "
        f"{sum(request['loop_seconds'] for request in report['requests'].values()) / 60:.0f} min.\n\n"
        + markdown_table(rows, [("request", "request"), ("method", "method"), *METRICS.items()], cell)
    ) + "\n"


def main() -> None:
    options = arguments()
    work = options.work_dir.resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    data_dir = Path(options.dataset_dir) if options.dataset_dir else work / "data" / "CheXpert-v1.0-small"
    if options.dataset_dir or (data_dir / "train.csv").is_file():
        data = {"dataset_dir": str(data_dir), "image_size": options.image_size, "batch_size": options.batch_size}
    else:
        data = chexpert_data(work, options.patients, options.image_size, options.batch_size)
        data.pop("seed")  # the protocol sets the seed per step
    seeds = [int(seed) for seed in options.seeds.split(",")]
    described = options.dataset_dir or f"synthetic CheXpert tree, {options.patients} patients (generator seed 0)"
    settings = {"data": described, **{key: getattr(options, key) for key in
                                      ("image_size", "train_epochs", "forget_fraction")}}  # fmt: skip
    for count in range(1, len(seeds) + 1):  # one seed more each time: partial results survive an interruption
        requests = {}
        for name, attributes in REQUESTS.items():
            result = run_protocol(
                BUNDLE,
                STRATEGIES,
                seeds[:count],
                (options.forget_fraction,),
                work / name,
                options.train_epochs,
                model_dir=str(work / "models"),
                experiment_name=f"protocol-chexpert-{name}",
                **data,
                **attributes,
            )
            requests[name] = request_report(result, work / name)
        report = {"machine": machine(), "settings": settings, "requests": requests}
        options.results_dir.mkdir(parents=True, exist_ok=True)
        (options.results_dir / "chexpert_unlearning.json").write_text(json.dumps(report, indent=2))
        (options.results_dir / "chexpert_unlearning.md").write_text(markdown(report))
        print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
