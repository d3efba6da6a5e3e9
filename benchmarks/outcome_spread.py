"""Spread of the end-to-end outcome tests' asserted quantities over seeds and thread counts, per bundle setting.

Each ``--bundle`` reruns one test module's setting for every (seed, thread count) asked (a seed changes the data
where the test generates it, the forget request where it is drawn, the model initialisation and the data order):

- ``tissuemnist`` (``tests/bundles/test_tissuemnist_bundle.py``: 480 synthetic training images, 20 % forgotten, 15
  training epochs, batch 64, each strategy's shipped unlearn_epochs), per strategy: ``drop`` =
  ``forget_acc(original) - forget_acc(strategy)``; ``loss_rise`` = mean cross-entropy of the forget items, strategy
  minus original; ``closer`` = how much nearer the strategy is to the retrained model than the original was, in
  points of the mean absolute difference over forget, retain and test accuracy (computed here, not by the package's
  gap function);
- ``mrbrains18`` (``tests/bundles/test_mrbrains18_bundle.py``: 7 alike synthetic subjects, one forgotten, ResNet-10,
  24 training and 4 unlearning epochs), per strategy: ``drop`` of forget Dice against the original and ``closer``
  over forget, retain and test Dice; the retrained model is a row too;
- ``mrbrains18_noise`` (``tests/bundles/test_mrbrains18_noise_modes.py``: the distinct arm), per Noisy Label noise
  mode: ``drop`` of forget Dice;
- ``chexpert`` (``tests/bundles/test_chexpert_bundle.py``: 80 synthetic patients, a quarter of the female ones
  forgotten, 8 epochs), per strategy and for the retrained model: ``drop`` of forget accuracy and ``closer``; the
  original's test AUC is a row of its own.

An outcome test is sound when its quantity is several spreads above 0. Each setting runs in its own process (the
thread count is fixed at start); results are written as they come and a rerun skips finished settings:

    python benchmarks/outcome_spread.py --bundle mrbrains18 --seeds 0,1 --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _report import add_results_dir, machine, markdown_table

NAME = "outcome_spread"
BUNDLE = "tissuemnist_resnet_classification"
QUANTITIES = {
    "drop": "forget-accuracy drop (points)",
    "loss_rise": "forget-loss rise (nats)",
    "closer": "gap to retrain closed (points)",
}
# --bundle -> (results file name, title, quantity -> heading); the tissuemnist setting keeps its original file name.
SETTINGS = {
    "tissuemnist": (NAME, "TissueMNIST end-to-end setting", QUANTITIES),
    "mrbrains18": (f"{NAME}_mrbrains18", "MRBrainS18 end-to-end setting (alike subjects)",
                   {"drop": "forget-Dice drop (points)", "closer": "gap to retrain closed (points)"}),
    "mrbrains18_noise": (f"{NAME}_mrbrains18_noise", "MRBrainS18 Noisy Label noise modes (distinct subject)",
                         {"drop": "forget-Dice drop (points)"}),
    "chexpert": (f"{NAME}_chexpert", "CheXpert end-to-end setting",
                 {"drop": "forget-accuracy drop (points)", "closer": "gap to retrain closed (points)",
                  "reference": "original test AUC and retraining's forget-accuracy drop (points)"}),
}  # fmt: skip


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", choices=sorted(SETTINGS), default="tissuemnist")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument(
        "--overrides", default="{}", help="JSON bundle overrides, e.g. '{\"network_def#widen_factor\": 0.5}'"
    )
    parser.add_argument("--name", help="results file name (default: the setting's)")
    parser.add_argument("--setting", help=argparse.SUPPRESS)  # "seed,threads": run one setting in this process
    add_results_dir(parser)
    return parser.parse_args()


def run_setting(bundle: str, seed: int, overrides: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The named test setting at ``seed``, with ``overrides`` on every workflow: quantity -> row -> value."""
    runners = {"tissuemnist": run_tissuemnist, "mrbrains18": run_mrbrains18, "mrbrains18_noise": run_noise_modes,
               "chexpert": run_chexpert}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        os.environ["MEDUNLEARN_SALT"] = "outcome-spread"
        return runners[bundle](Path(folder), seed, overrides)


def closer(scores: dict[str, dict[str, float]], model: str, keys: tuple[str, ...]) -> float:
    """How much nearer ``model`` is to the retrained model than the original, in points of mean absolute difference
    over ``keys`` (computed here, not by the package's gap function)."""

    def distance(name: str) -> float:
        return 100 * float(np.mean([abs(scores[name][key] - scores["retrained"][key]) for key in keys]))

    return distance("model") - distance(model)


def evaluate_every_model(bundle: str, names: list[str], common: dict[str, Any], request: dict[str, Any]) -> dict:
    """Evaluate the original, the retrained and every unlearned model in ``common["model_dir"]``: model -> scores."""
    from medunlearn_monai.records import read_json
    from medunlearn_monai.workflows import run_workflow

    models, scores = Path(common["model_dir"]), {}
    for model in ("model", "retrained", *(f"unlearned_{name}" for name in names)):
        run_workflow(bundle, "evaluate", **common, **request, model_path=str(models / f"{model}.pt"))
        scores[model] = read_json(models / f"{model}.eval.json")
    return scores


def drop_and_closer(scores: dict, names: list[str], metric: str) -> dict[str, dict[str, float]]:
    """``drop`` of ``forget_<metric>`` against the original (retrained model and every strategy) and ``closer`` over
    forget, retain and test ``<metric>`` (every strategy)."""
    rows = {"retrained": "retrained", **{name: f"unlearned_{name}" for name in names}}
    keys = tuple(f"{split}_{metric}" for split in ("forget", "retain", "test"))
    forget = f"forget_{metric}"
    return {
        "drop": {row: scores["model"][forget] - scores[model][forget] for row, model in rows.items()},
        "closer": {row: closer(scores, model, keys) for row, model in rows.items() if row != "retrained"},
    }


def run_tissuemnist(work: Path, seed: int, overrides: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The TissueMNIST test's pipeline at ``seed`` (model initialisation, data order and forget request)."""
    from medunlearn_monai.data.medmnist import load_medmnist_items
    from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
    from medunlearn_monai.forget import ForgetRequest
    from medunlearn_monai.records import read_json
    from medunlearn_monai.workflows import run_workflow, strategies

    bundle, names = BUNDLE, strategies(BUNDLE)
    data = write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=480, n_val=100, n_test=300)
    forgotten = ForgetRequest.generate(load_medmnist_items(data, "train"), 0.2, seed=seed).subject_ids
    (work / "request.txt").write_text("\n".join(forgotten) + "\n")
    common = {"dataset_dir": str(work / "data"), "model_dir": str(work / "models"), "batch_size": 64,
              "max_epochs": 15, "experiment_name": "spread", "seed": seed, **overrides}  # fmt: skip
    request = {"forget_request_file": str(work / "request.txt")}
    run_workflow(bundle, "train", **common)
    run_workflow(bundle, "train", **common, **request)
    for name in names:
        run_workflow(bundle, "unlearn", name, **common, **request)
    scores = evaluate_every_model(bundle, names, common, request)
    losses = {model: float(np.mean(read_json(work / "models" / f"{model}.items.json")["splits"]["forget"]["loss"]))
              for model in scores}  # fmt: skip
    quantities = drop_and_closer(scores, names, "acc")
    del quantities["drop"]["retrained"]  # this setting's results file has strategies only
    return {**quantities, "loss_rise": {name: losses[f"unlearned_{name}"] - losses["model"] for name in names}}


def run_mrbrains18(work: Path, seed: int, overrides: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The MRBrainS18 test's pipeline (its sizes, subjects and overrides) at ``seed``."""
    from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18
    from medunlearn_monai.workflows import run_workflow, strategies

    bundle = "mrbrains18_med3d_segmentation"
    names, subjects = strategies(bundle), [f"mrb-subject-{letter}" for letter in "abcdefg"]
    write_synthetic_mrbrains18(work / "data", n_subjects=len(subjects), spacing=(4.0, 4.0, 6.0), seed=seed,
                               subject_ids=subjects)  # fmt: skip
    (work / "request.txt").write_text("mrb-subject-c\n")
    common = {"dataset_dir": str(work / "data"), "model_dir": str(work / "models"), "depth": 10, "seed": seed,
              "pixdim": [4.0, 4.0, 6.0], "roi_size": [32, 32, 16], "test_subjects": ["mrb-subject-g"],
              **overrides}  # fmt: skip
    request = {"forget_request_file": str(work / "request.txt")}
    run_workflow(bundle, "train", **common, max_epochs=24, val_interval=24)
    run_workflow(bundle, "train", **common, **request, max_epochs=24, val_interval=24)
    strategy_overrides = {"neggrad_plus": {"forget_weight": 4.0}}  # as in the test
    for name in names:
        run_workflow(bundle, "unlearn", name, **common, **request, unlearn_epochs=4,
                     **strategy_overrides.get(name, {}))  # fmt: skip
    return drop_and_closer(evaluate_every_model(bundle, names, common, request), names, "dice")


def run_noise_modes(work: Path, seed: int, overrides: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The MRBrainS18 noise-mode test's pipeline at ``seed``: forget-Dice drop of Noisy Label in each mode."""
    from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18
    from medunlearn_monai.records import read_json
    from medunlearn_monai.workflows import run_workflow

    bundle, subjects = "mrbrains18_med3d_segmentation", [f"mrb-subject-{letter}" for letter in "abcdefg"]
    write_synthetic_mrbrains18(work / "data", n_subjects=len(subjects), spacing=(4.0, 4.0, 6.0), seed=seed,
                               subject_ids=subjects, arm="distinct", distinct_subjects=["mrb-subject-c"])  # fmt: skip
    (work / "request.txt").write_text("mrb-subject-c\n")
    common = {"dataset_dir": str(work / "data"), "model_dir": str(work / "models"), "depth": 10, "seed": seed,
              "pixdim": [4.0, 4.0, 6.0], "roi_size": [32, 32, 16], "test_subjects": [subjects[-1]],
              **overrides}  # fmt: skip
    request = {"forget_request_file": str(work / "request.txt")}
    run_workflow(bundle, "train", **common, max_epochs=24, val_interval=24)
    paths = {"original": work / "models" / "model.pt"}
    for mode in ("fresh", "fixed", "flip", "background"):
        paths[mode] = work / "models" / f"noisy_label_{mode}.pt"
        run_workflow(bundle, "unlearn", "noisy_label", **common, **request, noise=mode, unlearn_epochs=4,
                     output_model=str(paths[mode]))  # fmt: skip
    dice = {}
    for name, path in paths.items():
        run_workflow(bundle, "evaluate", **common, **request, model_path=str(path))
        dice[name] = read_json(path.with_suffix(".eval.json"))["forget_dice"]
    return {"drop": {mode: dice["original"] - value for mode, value in dice.items() if mode != "original"}}


def run_chexpert(work: Path, seed: int, overrides: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The CheXpert test's pipeline (its data, sizes and request) at ``seed``."""
    from medunlearn_monai.data.synthetic import write_synthetic_chexpert
    from medunlearn_monai.workflows import run_workflow, strategies

    bundle = "chexpert_resnet_classification"
    names = strategies(bundle)
    easy = {"cue_strength": 1.0, "noise_std": 0.02, "label_noise": 0.0, "female_prevalence": 0.3,
            "male_prevalence": 0.3}  # fmt: skip
    data = write_synthetic_chexpert(work / "CheXpert-v1.0-small", n_patients=80, size=32, seed=seed, **easy)
    common = {"dataset_dir": str(data), "model_dir": str(work / "models"), "image_size": 32, "batch_size": 16,
              "max_epochs": 8, "check_images": True, "seed": seed, **overrides}  # fmt: skip
    request = {"forget_fraction": 0.25, "forget_where": {"sex": "Female"}}
    run_workflow(bundle, "train", **common)
    run_workflow(bundle, "train", **common, **request)
    for name in names:
        run_workflow(bundle, "unlearn", name, **common, **request)
    scores = evaluate_every_model(bundle, names, common, request)
    return {
        **drop_and_closer(scores, names, "acc"),
        "reference": {
            "original test AUC (x 100)": scores["model"]["test_auc"],
            "retraining's forget-accuracy drop": scores["model"]["forget_acc"] - scores["retrained"]["forget_acc"],
        },
    }


def main() -> None:
    options = arguments()
    name, title, quantities = SETTINGS[options.bundle]
    overrides = json.loads(options.overrides)
    if overrides:
        title = f"{title}, overrides {overrides}"
    name = options.name or name
    if options.setting:
        seed, threads = (int(part) for part in options.setting.split(","))
        print(json.dumps({"seed": seed, "threads": threads, **run_setting(options.bundle, seed, overrides)}))
        return
    path = options.results_dir / f"{name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"settings": []}
    results["settings"] = [entry for entry in results["settings"] if set(quantities) <= entry.keys()]  # older format
    done = {(entry["seed"], entry["threads"]) for entry in results["settings"]}
    for seed in (int(s) for s in options.seeds.split(",")):
        for threads in (int(t) for t in options.threads.split(",")):
            if (seed, threads) in done:
                continue
            environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MLFLOW_DISABLE_TELEMETRY": "true"}
            command = [sys.executable, __file__, "--bundle", options.bundle, "--overrides", options.overrides,
                       "--setting", f"{seed},{threads}"]  # fmt: skip
            output = subprocess.run(command, env=environment, check=True, capture_output=True, text=True).stdout
            results["settings"].append(json.loads(output.strip().splitlines()[-1]))
            results["machine"] = machine()
            options.results_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2))
            print(f"{options.bundle}: seed {seed}, {threads} threads: done", flush=True)
    write_markdown(options.results_dir, name, title, quantities, results)


def write_markdown(results_dir: Path, name: str, title: str, quantities: dict[str, str], results: dict) -> None:
    settings = results["settings"]
    columns = [("row", "row"), *((f"s{e['seed']}t{e['threads']}", f"seed {e['seed']}, {e['threads']} thr")
               for e in settings), ("mean", "mean"), ("std", "std"), ("min/std", "min / std")]  # fmt: skip
    sections = []
    for quantity, heading in quantities.items():
        rows = []
        for row_name in sorted(settings[0][quantity]):
            scale = 100 if quantity in ("drop", "reference") else 1  # fractions -> points; closer is in points
            values = scale * np.array([entry[quantity][row_name] for entry in settings])
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            row = {"row": row_name, "mean": f"{values.mean():+.2f}", "std": f"{spread:.2f}" if spread else "-"}
            row["min/std"] = f"{values.min() / spread:.1f}" if spread else "-"
            row |= {f"s{e['seed']}t{e['threads']}": f"{value:+.2f}" for e, value in zip(settings, values, strict=True)}
            rows.append(row)
        sections.append(f"## {heading}\n\n" + markdown_table(rows, columns, lambda key, value: value))
    (results_dir / f"{name}.md").write_text(
        f"# Outcome-test spread: {title}\n\n"
        f"Machine: {results['machine']}. Per row and (seed, thread count), the quantities the test module asserts or "
        "could assert (forget metric drop against the original model, how much closer to the retrained model than "
        "the original, in points of mean absolute difference over forget, retain and test). A test asserting "
        "`quantity > 0` is sound when the smallest value is several standard deviations above 0 (min / std).\n\n"
        + "\n\n".join(sections)
        + "\n"
    )


if __name__ == "__main__":
    main()
