"""Privacy evaluation of every TissueMNIST strategy, with the cost of each evaluation.

Runs the demo (train, exact retrain, every strategy, evaluate: SVC MIA and loss-threshold attack),
then U-LiRA with K shadow pairs, the easy/hard study, a short SalUn tuning (its cost goes into the
speedup) and the HTML report. Writes benchmarks/results/tissuemnist_privacy.{json,md} and the
report as tissuemnist_privacy_report.html.

    python benchmarks/tissuemnist_privacy.py [--shadow_pairs 2] [--tune_trials 4] [--output_dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from _report import machine, markdown_table

from medunlearn_monai.comparison import comparison_rows
from medunlearn_monai.demo import DEMO_BUNDLE, run_demo
from medunlearn_monai.records import read_json
from medunlearn_monai.report import write_report
from medunlearn_monai.studies import run_difficulty_study, run_ulira_study
from medunlearn_monai.tracking import PARENT_RUN_TAG, tracking_uri
from medunlearn_monai.tuning import tune
from medunlearn_monai.workflows import strategies

RESULTS = Path(__file__).resolve().parent / "results"
EXPERIMENT = "benchmark-tissuemnist-privacy"
FORGET_FRACTION = 0.1
METHOD_COLUMNS = [
    ("method", "method"),
    ("retain_acc", "retain acc"),
    ("forget_acc", "forget acc"),
    ("test_acc", "test acc"),
    ("mia_efficacy", "SVC MIA efficacy"),
    ("mia_loss_auc", "loss-attack AUC"),
    ("mia_loss_tpr_at_1pct_fpr", "loss TPR@1%FPR"),
    ("ulira_auc", "U-LiRA AUC"),
    ("gap_to_retrain", "Avg. Gap"),
    ("unlearn_seconds", "seconds"),
    ("speedup_vs_retrain", "speedup"),
    ("evaluate_seconds", "evaluate s"),
]
DIFFICULTY_COLUMNS = [
    ("strategy", "method"),
    ("quantile", "forget set"),
    ("forget_acc", "forget acc"),
    ("retain_acc", "retain acc"),
    ("test_acc", "test acc"),
    ("mia_efficacy", "SVC MIA efficacy"),
    ("gap_to_retrain", "Avg. Gap"),
]


def cell(key: str, value: Any) -> str:
    """Accuracies in percent, AUCs and rates as fractions, seconds with one decimal."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key.endswith("_acc"):
        return f"{100 * value:.1f}"
    if key == "speedup_vs_retrain":
        return f"{value:.1f}x"
    if key.endswith("seconds") or key == "gap_to_retrain":
        return f"{value:.1f}"
    return f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shadow_pairs", type=int, default=2, help="U-LiRA shadow pairs K (default 2)")
    parser.add_argument("--tune_trials", type=int, default=4, help="SalUn tuning trials (default 4)")
    parser.add_argument("--output_dir", default=None, help="work folder (default: a temporary one)")
    parser.add_argument(
        "--collect_only", action="store_true", help="only read the results of an earlier run in --output_dir"
    )
    arguments = parser.parse_args()
    if arguments.collect_only and not arguments.output_dir:
        parser.error("--collect_only needs the --output_dir of an earlier run")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(arguments.output_dir or scratch)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        load_before = os.getloadavg()[1]
        if not arguments.collect_only:
            run(work, arguments.shadow_pairs, arguments.tune_trials)
        report = collect(work)
        # Other processes on the machine inflate the seconds: the 5-minute load averages say how busy it was.
        load = {"start": load_before, "end": os.getloadavg()[1]}
        report["load_average_5min"] = None if arguments.collect_only else load
        shutil.copy(write_report(EXPERIMENT, work / "report.html"), RESULTS / "tissuemnist_privacy_report.html")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tissuemnist_privacy.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "tissuemnist_privacy.md").write_text(markdown(report))
    print((RESULTS / "tissuemnist_privacy.md").read_text())


def run(work: Path, shadow_pairs: int, tune_trials: int) -> None:
    """Every step of the benchmark in ``work``: demo, U-LiRA, easy/hard study and SalUn tuning."""
    names = strategies(DEMO_BUNDLE)
    demo = run_demo(work, FORGET_FRACTION, experiment=EXPERIMENT)
    overrides = {
        "dataset_dir": str(work / "data"),
        "model_dir": str(demo.models_dir),
        "experiment_name": EXPERIMENT,
        "seed": 0,
    }
    run_ulira_study(DEMO_BUNDLE, names, shadow_pairs, **overrides, forget_fraction=FORGET_FRACTION)
    run_difficulty_study(DEMO_BUNDLE, names, FORGET_FRACTION, **overrides)
    tune(DEMO_BUNDLE, "salun", tune_trials, **overrides, forget_fraction=FORGET_FRACTION)


def collect(work: Path) -> dict[str, Any]:
    """The report's content, read from the MLflow runs and the model folder; seconds are the runs' durations."""
    client = mlflow.MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    top_level = [run for run in runs if PARENT_RUN_TAG not in run.data.tags]
    latest = {}
    for run in top_level:
        latest.setdefault((run.data.params.get("workflow"), run.data.params.get("strategy")), run)
    studies = {workflow: run for (workflow, _), run in latest.items() if workflow in ("ulira", "difficulty", "tune")}
    ulira, difficulty, tuning = studies["ulira"], studies["difficulty"], studies["tune"]
    rows = []
    for row in comparison_rows(EXPERIMENT):
        model = {"original": "model", "retrain": "retrained"}.get(row["method"], f"unlearned_{row['method']}")
        evaluation = read_json(work / "models" / f"{model}.eval.json")
        rows.append(
            {
                **row,
                **{key: evaluation.get(key) for key in ("mia_loss_auc", "mia_loss_tpr_at_1pct_fpr")},
                "ulira_auc": ulira.data.metrics.get(f"ulira_auc_{row['method']}"),
                "evaluate_seconds": _seconds(latest[("evaluate", row["method"])]),
            }
        )
    gaps = client.download_artifacts(difficulty.info.run_id, "tables/difficulty_gaps.json", str(work))
    demo_runs = [
        run for run in top_level if run.data.params.get("workflow") in ("train", "retrain", "unlearn", "evaluate")
    ]
    return {
        "machine": machine(),
        "forget_fraction": FORGET_FRACTION,
        "shadow_pairs": int(ulira.data.metrics["ulira_shadow_pairs"]),
        "methods": rows,
        "difficulty": json.loads(Path(gaps).read_text()),
        "tuning": {
            "strategy": "salun",
            "trials": int(tuning.data.params["n_trials"]),
            "best_params": {key: value for key, value in tuning.data.params.items() if key.startswith("best_")},
            **tuning.data.metrics,
        },
        "seconds": {
            "demo_workflows": sum(_seconds(run) for run in demo_runs),
            "evaluate_runs": [row["evaluate_seconds"] for row in rows],
            "ulira": ulira.data.metrics["ulira_seconds"],
            "difficulty": difficulty.data.metrics["difficulty_seconds"],
            "tuning": tuning.data.metrics["tuning_seconds"],
        },
    }


def _seconds(run: Any) -> float:
    return (run.info.end_time - run.info.start_time) / 1000.0


def markdown(report: dict[str, Any]) -> str:
    """The results page: method table, easy/hard table, tuning and the cost of each evaluation."""
    seconds = report["seconds"]
    evaluate_steps = seconds["evaluate_runs"]
    tuning = report["tuning"]
    load = report["load_average_5min"]
    if load is None:
        machine_load = " (results collected from an earlier run's folder; its load average was not recorded)"
    else:
        busy = ", other work shared the cores and the seconds are inflated" if max(load.values()) > 2.5 else ""
        machine_load = f"; 5-minute load average {load['start']:.1f} at the start, {load['end']:.1f} at the end{busy}"
    return (
        "# TissueMNIST privacy evaluation\n\n"
        f"Machine: {report['machine']}{machine_load}.\n\n"
        f"Synthetic TissueMNIST (1000 train images), ResNet-18, {100 * report['forget_fraction']:.0f}% of subjects "
        f"forgotten, seed 0. U-LiRA with K = {report['shadow_pairs']} shadow pairs. Accuracies in percent; attack "
        "AUCs: 0.5 = the forget set cannot be told from unseen data (loss attack) or from a retrained model "
        "(U-LiRA); SVC MIA efficacy = share of forget items the confidence attack calls non-members.\n\n"
        f"{markdown_table(report['methods'], METHOD_COLUMNS, cell)}\n\n"
        "## Easy versus hard forget sets\n\n"
        "Subjects ranked by the original model's loss; the easiest and the hardest 10% forgotten in turn, each "
        "method's gap to the model retrained without that set.\n\n"
        f"{markdown_table(report['difficulty'], DIFFICULTY_COLUMNS, cell)}\n\n"
        "## Tuning on the bill\n\n"
        f"SalUn, {tuning['trials']} Optuna trials: {tuning.get('tuning_seconds', 0):.1f} s of tuning, best "
        f"validation gap "
        f"{tuning.get('best_val_gap_to_retrain', float('nan')):.2f} points with {tuning['best_params']}; speedup over "
        f"retraining including the tuning: {tuning.get('speedup_vs_retrain_incl_tuning', float('nan')):.2f}x.\n\n"
        "## Cost of each evaluation\n\n"
        f"| evaluation | seconds |\n|---|---|\n"
        f"| one evaluate run (SVC MIA + loss attack + per-item scores), mean of {len(evaluate_steps)} runs | "
        f"{sum(evaluate_steps) / len(evaluate_steps):.1f} |\n"
        f"| U-LiRA, K = {report['shadow_pairs']} shadow pairs, all methods | {seconds['ulira']:.1f} |\n"
        f"| easy/hard study, all methods | {seconds['difficulty']:.1f} |\n"
        f"| SalUn tuning | {seconds['tuning'] or 0:.1f} |\n"
        f"| demo workflows (train, retrain, all methods, evaluations; sum of runs) | "
        f"{seconds['demo_workflows']:.1f} |\n"
    )


if __name__ == "__main__":
    main()
