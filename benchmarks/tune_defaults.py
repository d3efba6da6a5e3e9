"""Tune the classifier strategies' shipped defaults once per bundle, on synthetic data, never reading test data.

Every strategy of the TissueMNIST bundle is tuned in ``per_bundle`` mode (``medunlearn_monai.tuning``): a
tuning request (a random 10 % forget set drawn with its own seed) with its own exact retraining as the
reference, trials scored by the Avg. Gap to it on the validation split. The chosen values and a
``provenance`` key (tuning run, data, seeds, trials, objective, cost, amortisation) are written into each
strategy's config with ``--write``; ``benchmarks/results/tuned_defaults.{json,md}`` record the outcome.

Resumable: each finished strategy leaves ``<work_dir>/<strategy>.json``; a re-run skips it. Two processes
with disjoint ``--strategies`` may share one work folder (the reference retraining is made by the first).

    python benchmarks/tune_defaults.py --work_dir benchmarks/work/tune_defaults --strategies ft,ga --write
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from _report import add_results_dir, machine, markdown_table, write_results
from synthetic_arm import SYNTHETIC_SIZES, write_synthetic_arm

from medunlearn_monai import workflows
from medunlearn_monai.tuning import PER_BUNDLE, read_strategy_config, tune

BUNDLE = "tissuemnist_resnet_classification"
STRATEGIES = ("ft", "ga", "neggrad_plus", "rl", "salun", "scrub", "l1_sparse", "ssd", "rum", "rl_stop", "salun_stop")
SEED, TUNING_SEED, FORGET_FRACTION = 0, 12345, 0.1
# Unlearning must stay far cheaper than retraining (20 epochs): the search may not buy its gap with epochs.
SEARCH = {"unlearn_epochs": [1, 5]}
# Eight trials cannot cover SCRUB's six knobs: its loss weights stay at the authors' common setting.
FIXED = {"scrub": {"ce_weight": 1.0, "temperature": 4.0}}
AMORTISE_OVER = 100


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", type=Path, default=Path("benchmarks/work/tune_defaults"))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--n_trials", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="write the tuned values into the strategy configs")
    add_results_dir(parser)
    return parser.parse_args()


def tune_strategy(strategy: str, work: Path, n_trials: int) -> dict[str, Any]:
    """Tune one strategy (or read its finished result) and return values, provenance and trials."""
    done = work / f"{strategy}.json"
    if done.is_file():
        return json.loads(done.read_text())
    overrides = {
        "dataset_dir": str(work / "data"),
        "model_dir": str(work / "models"),
        "forget_fraction": FORGET_FRACTION,
    }
    original = work / "models" / "model.pt"
    if not original.is_file():
        workflows.run_workflow(BUNDLE, "train", None, **overrides | {"forget_fraction": None, "seed": SEED})
    declared = read_strategy_config(BUNDLE, strategy, overrides).hyperparameters
    result = tune(
        BUNDLE,
        strategy,
        n_trials,
        SEED,
        {name: values for name, values in SEARCH.items() if name in declared} | FIXED.get(strategy, {}),
        mode=PER_BUNDLE,
        tuning_seed=TUNING_SEED,
        amortise_over=AMORTISE_OVER,
        **overrides,
    )
    provenance = {**result.provenance, "data": f"synthetic TissueMNIST ({SYNTHETIC_SIZES})"}
    outcome = {
        "strategy": strategy,
        "values": {name: _rounded(value) for name, value in result.best.params.items()},
        "provenance": provenance,
        "speedup_vs_retrain_incl_tuning": result.metrics["speedup_vs_retrain_incl_tuning"],
        "trials": [
            {"trial": trial.number, "val_gap": trial.objective, "seconds": trial.seconds, **trial.params}
            for trial in result.trials
        ],
    }
    done.write_text(json.dumps(outcome, indent=2))
    return outcome


def _rounded(value: Any) -> Any:
    """Floats to 4 significant digits: the config stays readable, the search's resolution is coarser anyway."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def write_strategy_defaults(path: Path, values: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Set top-level ``"name": value`` lines of a strategy config and put ``provenance`` after ``"strategy"``.

    Edits the text rather than re-dumping the JSON so the hand-kept layout of the config survives.
    """
    text = path.read_text()
    for name, value in values.items():
        text, count = re.subn(rf'^(    "{name}": )[^\n]*?(,?)$', rf"\g<1>{json.dumps(value)}\g<2>", text, flags=re.M)
        if count != 1:
            raise ValueError(f"{path} has no single top-level {name!r} line to set.")
    text = re.sub(r'^    "provenance": [^\n]*\n', "", text, flags=re.M)
    line = f'    "provenance": {json.dumps(provenance)},\n'
    text = re.sub(r'^(    "strategy": [^\n]*\n)', lambda match: match.group(1) + line, text, count=1, flags=re.M)
    json.loads(text)  # still valid JSON
    path.write_text(text)


def markdown(outcomes: list[dict[str, Any]]) -> str:
    rows = [
        {
            "strategy": outcome["strategy"],
            "values": ", ".join(f"{name}={value}" for name, value in outcome["values"].items()),
            "val_gap": outcome["provenance"]["best_objective"],
            "trials": outcome["provenance"]["n_trials"],
            "tuning_s": outcome["provenance"]["tuning_seconds"],
            "retrain_s": outcome["provenance"]["tuning_retrain_seconds"],
            "speedup": outcome["speedup_vs_retrain_incl_tuning"],
        }
        for outcome in outcomes
    ]
    columns = [
        ("strategy", "strategy"),
        ("values", "chosen values"),
        ("val_gap", "validation Avg. Gap"),
        ("trials", "trials"),
        ("tuning_s", "tuning s (reference retraining included)"),
        ("retrain_s", "retraining s"),
        ("speedup", f"speedup incl. 1/{AMORTISE_OVER} of the tuning"),
    ]

    def cell(key: str, value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    return (
        "# Tuned strategy defaults (per_bundle)\n\n"
        f"Machine: {machine()}. Data: synthetic TissueMNIST ({SYNTHETIC_SIZES}). Each strategy: "
        f"{outcomes[0]['provenance']['n_trials'] if outcomes else 0} Optuna TPE trials (seed {SEED}) on a tuning "
        f"request of {FORGET_FRACTION:.0%} of the training subjects drawn with seed {TUNING_SEED}; objective: Avg. "
        "Gap to that request's exact retraining on the validation split (the test split is never read); "
        f"unlearn_epochs (where a strategy has it) searched in {SEARCH['unlearn_epochs']}. The search, its reference "
        "retraining included, is "
        f"amortised over {AMORTISE_OVER} requests: each request is billed 1/{AMORTISE_OVER} of it.\n\n"
        f"{markdown_table(rows, columns, cell)}\n"
    )


def main() -> None:
    options = arguments()
    work = options.work_dir.resolve()
    write_synthetic_arm(work / "data" / "tissuemnist.npz")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    for strategy in filter(None, options.strategies.split(",")):  # "" only rewrites the report
        tune_strategy(strategy, work, options.n_trials)
    outcomes = [
        json.loads((work / f"{name}.json").read_text()) for name in STRATEGIES if (work / f"{name}.json").is_file()
    ]
    write_results(
        options.results_dir, "tuned_defaults", {"machine": machine(), "strategies": outcomes}, markdown(outcomes)
    )
    if options.write:
        folder = workflows.bundle_dir(BUNDLE) / "configs" / "strategies"
        for outcome in outcomes:
            write_strategy_defaults(folder / f"{outcome['strategy']}.json", outcome["values"], outcome["provenance"])


if __name__ == "__main__":
    main()
