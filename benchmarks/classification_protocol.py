"""The classification protocol, two arms: synthetic TissueMNIST and real BreastMNIST, several seeds each.

Each arm runs ``medunlearn_monai.studies.run_protocol`` on the TissueMNIST bundle: per seed the original,
an exact retraining, a second retraining with another seed (the noise floor), every strategy with its
shipped (per_bundle tuned) defaults, and all evaluations, at forget fractions 10 % (the headline, with
the noise floor), 1 %, 25 % and 50 %. Seeds are added one at a time and the results files are rewritten
after each, so an interrupted run keeps what it finished and a re-run resumes (finished steps are skipped).

BreastMNIST (real breast ultrasound; MedMNIST v2, Yang et al., Scientific Data 2023, from Al-Dhabyani et
al., Data in Brief 2020) is read from ``../shared/data/breastmnist.npz``; the arm is skipped with a message
where that file is absent.

    OMP_NUM_THREADS=1 python benchmarks/classification_protocol.py --arm breastmnist --work_dir benchmarks/work
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from _loop_time import loop_seconds
from _report import add_results_dir, machine, markdown_table, plus_minus
from synthetic_arm import SYNTHETIC_SIZES, write_synthetic_arm

from medunlearn_monai.studies import run_protocol
from medunlearn_monai.studies.protocol import ProtocolResult
from medunlearn_monai.studies.protocol_plots import (
    NOISE_FLOOR,
    RETRAIN,
    gap_versus_speedup,
    test_accuracy_versus_fraction,
)

BUNDLE = "tissuemnist_resnet_classification"
STRATEGIES = ("ft", "ga", "neggrad_plus", "rl", "salun", "scrub", "l1_sparse", "ssd", "rum", "rl_stop", "salun_stop")
SEEDS = (0, 1, 2)
FRACTIONS = (0.1, 0.01, 0.25, 0.5)  # the first is the headline fraction and gets the noise floor
BREASTMNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "breastmnist.npz"
NAME = "classification_protocol"
METHOD_METRICS = {
    "gap": "gap_to_retrain",
    "speedup": "speedup_incl_tuning",
    "retain_acc": "retain_acc",
    "forget_acc": "forget_acc",
    "test_acc": "test_acc",
    "mia_loss_auc": "mia_loss_auc",
    "ulira_auc": "ulira_auc",
    "probe_forget_acc": "probe_forget_acc",
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=("synthetic_tissuemnist", "breastmnist"), required=True)
    parser.add_argument("--work_dir", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)), help="the first is the headline")
    parser.add_argument("--train_epochs", type=int, default=None, help="smoke runs only (default: the bundle's)")
    parser.add_argument("--ulira_shadow_pairs", type=int, default=0, help="K U-LiRA shadow pairs per seed (0: none)")
    add_results_dir(parser)
    return parser.parse_args()


def arm_overrides(arm: str, work: Path) -> tuple[dict[str, Any], str]:
    """The bundle overrides of an arm and a description of its data."""
    if arm == "breastmnist":
        return {"data_file": str(BREASTMNIST), "num_classes": 2}, "BreastMNIST (real, 28 px, official splits)"
    data = write_synthetic_arm(work / "data" / "tissuemnist.npz")
    return {"dataset_dir": str(data.parent), "num_classes": 8}, f"synthetic TissueMNIST ({SYNTHETIC_SIZES})"


def split_sizes(data_file: Path) -> dict[str, int]:
    with np.load(data_file) as arrays:
        return {split: len(arrays[f"{split}_labels"]) for split in ("train", "val", "test")}


def _stat(entry: Mapping[str, Any], metric: str, suffix: str) -> float | None:
    value = entry.get(f"{metric}_{suffix}")
    return None if value is None else float(value)


def arm_report(
    result: ProtocolResult, data: str, sizes: Mapping[str, int], work: Path, ulira_shadow_pairs: int
) -> dict[str, Any]:
    """One arm in the results file's shape: noise floor, methods at the headline fraction, the sweep."""
    main = result.summary[f"{result.fractions[0]:g}"]
    floor = main.get(NOISE_FLOOR, {})
    methods = {}
    for name in result.strategies:
        entry = main.get(name, {})
        methods[name] = {f"{key}_{suffix}": _stat(entry, metric, suffix)
                         for key, metric in METHOD_METRICS.items() for suffix in ("mean", "std")}  # fmt: skip
    sweep = {
        fraction: {
            name: {
                "gap_mean": _stat(entries.get(name, {}), "gap_to_retrain", "mean"),
                "gap_std": _stat(entries.get(name, {}), "gap_to_retrain", "std"),
                "test_drop_vs_retrain_mean": _stat(entries.get(name, {}), "test_drop_vs_retrain", "mean"),
                "test_drop_vs_retrain_std": _stat(entries.get(name, {}), "test_drop_vs_retrain", "std"),
                "test_acc_mean": _stat(entries.get(name, {}), "test_acc", "mean"),
            }
            for name in (RETRAIN, *result.strategies)
        }
        for fraction, entries in sorted(result.summary.items(), key=lambda item: float(item[0]))
    }
    references = {
        name: {
            f"{key}_{suffix}": _stat(main.get(name, {}), metric, suffix)
            for key, metric in METHOD_METRICS.items()
            for suffix in ("mean", "std")
        }  # fmt: skip
        for name in ("original", RETRAIN)
    }
    return {
        "seeds": result.seeds,
        "images": sum(sizes.values()),
        "splits": dict(sizes),
        "data": data,
        "headline_forget_fraction": result.fractions[0],
        "noise_floor": {
            "gap_mean": _stat(floor, "gap_to_retrain", "mean"),
            "gap_std": _stat(floor, "gap_to_retrain", "std"),
            "mia_loss_auc_mean": _stat(floor, "mia_loss_auc", "mean"),
            "mia_loss_auc_std": _stat(floor, "mia_loss_auc", "std"),
            "retain_acc_mean": _stat(floor, "retain_acc", "mean"),
            "forget_acc_mean": _stat(floor, "forget_acc", "mean"),
            "test_acc_mean": _stat(floor, "test_acc", "mean"),
            "probe_forget_acc_mean": _stat(floor, "probe_forget_acc", "mean"),
            "ulira_auc_mean": _stat(floor, "ulira_auc", "mean"),
            "ulira_auc_std": _stat(floor, "ulira_auc", "std"),
        },
        "ulira_shadow_pairs": ulira_shadow_pairs,
        "methods": methods,
        "references": references,
        "forget_fraction_sweep": sweep,
        "tuning_amortisation": {
            name: {key: result.tuning.get(name, {}).get(key) for key in ("amortised_over", "tuning_run")}
            for name in result.strategies
        },
        "loop_seconds": loop_seconds(work),
        "mlflow_run_id": result.run_id,
    }


def arm_markdown(arm: str, report: Mapping[str, Any]) -> str:
    """The headline table (noise floor first) and the forget-fraction sweep of one arm."""
    floor = report["noise_floor"]
    rows = [{"method": "noise floor (retrain vs retrain)", "gap": plus_minus(floor["gap_mean"], floor["gap_std"]),
             "speedup": "1", "retain": plus_minus(floor["retain_acc_mean"], None, 100, 1),
             "forget": plus_minus(floor["forget_acc_mean"], None, 100, 1),
             "test": plus_minus(floor["test_acc_mean"], None, 100, 1),
             "mia": plus_minus(floor["mia_loss_auc_mean"], floor["mia_loss_auc_std"], digits=3),
             "probe": plus_minus(floor.get("probe_forget_acc_mean"), None, 100, 1),
             "ulira": plus_minus(floor.get("ulira_auc_mean"), floor.get("ulira_auc_std"), digits=3)}]  # fmt: skip
    for name, entry in {**report["references"], **report["methods"]}.items():
        rows.append(
            {
                "method": name,
                "gap": plus_minus(entry["gap_mean"], entry["gap_std"]),
                "speedup": plus_minus(entry["speedup_mean"], entry["speedup_std"], digits=1),
                "retain": plus_minus(entry["retain_acc_mean"], entry["retain_acc_std"], 100, 1),
                "forget": plus_minus(entry["forget_acc_mean"], entry["forget_acc_std"], 100, 1),
                "test": plus_minus(entry["test_acc_mean"], entry["test_acc_std"], 100, 1),
                "mia": plus_minus(entry["mia_loss_auc_mean"], entry["mia_loss_auc_std"], digits=3),
                "probe": plus_minus(entry.get("probe_forget_acc_mean"), entry.get("probe_forget_acc_std"), 100, 1),
                "ulira": plus_minus(entry.get("ulira_auc_mean"), entry.get("ulira_auc_std"), digits=3),
            }
        )
    columns = [("method", "method"), ("gap", "Avg. Gap"), ("speedup", "speedup (tuning amortised)"),
               ("retain", "retain acc %"), ("forget", "forget acc %"), ("test", "test acc %"),
               ("mia", "loss-attack AUC"), ("probe", "probe forget acc %"), ("ulira", "U-LiRA AUC")]  # fmt: skip
    sweep = report["forget_fraction_sweep"]
    fractions = list(sweep)
    sweep_rows = [
        {
            "method": name,
            **{fraction: _sweep_cell(report["forget_fraction_sweep"][fraction][name]) for fraction in fractions},
        }
        for name in report["forget_fraction_sweep"][fractions[0]]
    ]
    sweep_columns = [("method", "method"), *((fraction, f"forget {float(fraction):.0%}") for fraction in fractions)]
    splits = report["splits"]
    return (
        f"## {arm}: {report['data']}\n\n"
        f"{report['images']} images (train {splits['train']}, val {splits['val']}, test {splits['test']}); seeds "
        f"{', '.join(map(str, report['seeds']))}; forget {report['headline_forget_fraction']:.0%} of the training "
        f"subjects; U-LiRA: {_ulira_text(report.get('ulira_shadow_pairs', 0))}; mean ± std over seeds; training and "
        "unlearning loops of all its models together: "
        f"{report.get('loop_seconds', float('nan')) / 60:.0f} min (evaluations and start-up not included).\n\n"
        f"{markdown_table(rows, columns, lambda key, value: value or '-')}\n\n"
        "Forget-set size: Avg. Gap / test-accuracy drop against the retrained model (points, mean over seeds); "
        "for `retrain` the cell is its test accuracy.\n\n"
        f"{markdown_table(sweep_rows, sweep_columns, lambda key, value: value or '-')}\n"
    )


def _ulira_text(pairs: int) -> str:
    return f"{pairs} shadow pairs per seed" if pairs else "not run"


def _sweep_cell(entry: Mapping[str, Any]) -> str:
    if entry["gap_mean"] is None:
        return "-" if entry["test_acc_mean"] is None else f"test {100 * entry['test_acc_mean']:.1f}"
    return f"{entry['gap_mean']:.2f} / {entry['test_drop_vs_retrain_mean']:+.1f}"


def write_report(results_dir: Path, arms: Mapping[str, Any]) -> None:
    """Merge this arm into the results files (the other arm's section is kept) and write the markdown."""
    path = results_dir / f"{NAME}.json"
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / f".{NAME}.lock", "w") as lock:  # the two arms run side by side
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = json.loads(path.read_text()) if path.is_file() else {"arms": {}}
        for arm, entry in arms.items():  # fractions not re-run this time keep their earlier sweep
            earlier = report["arms"].get(arm, {}).get("forget_fraction_sweep", {})
            entry["forget_fraction_sweep"] = {**earlier, **entry["forget_fraction_sweep"]}
            entry["forget_fraction_sweep"] = dict(
                sorted(entry["forget_fraction_sweep"].items(), key=lambda x: float(x[0]))
            )
        report["arms"].update(arms)
        report["machine"] = machine()
        path.write_text(json.dumps(report, indent=2))
    sections = [arm_markdown(arm, report["arms"][arm]) for arm in sorted(report["arms"])]
    (results_dir / f"{NAME}.md").write_text(
        "# Classification protocol: several seeds, noise floor, real images\n\n"
        f"Machine: {report['machine']}. Bundle `{BUNDLE}`, strategies with their shipped defaults, chosen by "
        "per_bundle tuning on synthetic TissueMNIST (validation split, a tuning request of its own; see "
        "`tuned_defaults.md`). Speedup = exact retraining's training-loop seconds over the method's, the "
        "tuning search (its reference retraining included) amortised over the 100 requests its values serve: "
        "each request is billed 1/100 of the search, scaled to this arm by the ratio of retraining times. "
        "The noise floor is a second exact retraining (seed + 1000, same request and data) scored against the "
        "first: a gap at or below it is as close to retraining as retraining is to itself, and differences "
        "within one standard deviation are no differences. The loss-attack AUC is a lower bound on leakage, "
        "not proof of its absence, and so is the U-LiRA AUC (per-example likelihood-ratio attack with K shadow "
        "pairs per seed, K stated per arm; null where not run); the noise floor's U-LiRA AUC is what the attack "
        "reads between two exact retrainings. The probe forget accuracy is a logistic-regression probe on the "
        "frozen penultimate features (fit on retain and validation items), scored on the forget items: compare it"
        " with `retrain`'s. Methods added later (scrub, l1_sparse, ssd, rum, rl_stop, salun_stop) ran at the "
        "headline fraction only; the forget-size sweep holds the methods it was run with. "
        "BreastMNIST: MedMNIST v2 (Yang et al., Scientific Data 2023), from Al-Dhabyani et al., Data in "
        "Brief 2020.\n\n" + "\n".join(sections)
    )


def save_plots(results_dir: Path, arm: str, result: ProtocolResult) -> None:
    main = result.summary[f"{result.fractions[0]:g}"]
    gap_versus_speedup(main, result.strategies).savefig(results_dir / f"{NAME}_{arm}_gap_vs_speedup.png", dpi=110,
                                                        bbox_inches="tight")  # fmt: skip
    figure = test_accuracy_versus_fraction(result.summary, [RETRAIN, *result.strategies])
    figure.savefig(results_dir / f"{NAME}_{arm}_test_acc_vs_fraction.png", dpi=110, bbox_inches="tight")


def main() -> None:
    options = arguments()
    if options.arm == "breastmnist" and not BREASTMNIST.is_file():
        print(f"Skipping the breastmnist arm: {BREASTMNIST} is absent (see ../shared/data/README.md).")
        return
    work = (options.work_dir / options.arm).resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    overrides, data = arm_overrides(options.arm, work)
    sizes = split_sizes(Path(overrides.get("data_file") or Path(overrides["dataset_dir"]) / "tissuemnist.npz"))
    seeds = [int(seed) for seed in options.seeds.split(",")]
    for count in range(1, len(seeds) + 1):  # one seed more each time: partial results survive an interruption
        result = run_protocol(
            BUNDLE,
            options.strategies.split(","),
            seeds[:count],
            [float(fraction) for fraction in options.fractions.split(",")],
            work / "protocol",
            options.train_epochs,
            options.ulira_shadow_pairs,
            experiment_name=f"protocol-{options.arm}",
            model_dir=str(work / "models"),
            **overrides,
        )
        report = arm_report(result, data, sizes, work / "protocol", options.ulira_shadow_pairs)
        write_report(options.results_dir, {options.arm: report})
        save_plots(options.results_dir, options.arm, result)
        print(f"{options.arm}: {count} of {len(seeds)} seeds written to {options.results_dir / NAME}.json", flush=True)


if __name__ == "__main__":
    main()
