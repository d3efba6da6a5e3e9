"""Spread of the TissueMNIST end-to-end outcome tests' asserted quantity over seeds and thread counts.

``tests/bundles/test_tissuemnist_bundle.py`` asserts an outcome of every strategy. This reruns that test's setting
(480 synthetic training images, 20 % forgotten, 15 training epochs, batch 64, each strategy's shipped
unlearn_epochs) for every (seed, thread count) asked, and records per strategy three candidate quantities:

- ``drop``: ``forget_acc(original) - forget_acc(strategy)``;
- ``loss_rise``: mean cross-entropy of the forget items (``<model>.items.json``), strategy minus original;
- ``closer``: how much nearer the strategy is to the retrained model than the original was, in points of the mean
  absolute difference over forget, retain and test accuracy (computed here, not by the package's gap function).

An outcome test is sound when its quantity is several spreads above 0.
Each setting runs in its own process (the thread count is fixed at start); results are written as they come and a
rerun skips finished settings:

    python benchmarks/outcome_spread.py --seeds 0,1 --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _report import add_results_dir, machine, markdown_table

NAME = "outcome_spread"
BUNDLE = "tissuemnist_resnet_classification"
QUANTITIES = {
    "drop": "forget-accuracy drop (points)",
    "loss_rise": "forget-loss rise (nats)",
    "closer": "gap to retrain closed (points)",
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--setting", help=argparse.SUPPRESS)  # "seed,threads": run one setting in this process
    add_results_dir(parser)
    return parser.parse_args()


def run_setting(seed: int) -> dict[str, dict[str, float]]:
    """The test's pipeline at ``seed`` (model initialisation, data order and forget request): quantity -> strategy ->
    value."""
    from medunlearn_monai.data.medmnist import load_medmnist_items
    from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
    from medunlearn_monai.forget import ForgetRequest
    from medunlearn_monai.records import read_json
    from medunlearn_monai.workflows import run_workflow, strategies

    bundle, names = BUNDLE, strategies(BUNDLE)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        data = write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=480, n_val=100, n_test=300)
        forgotten = ForgetRequest.generate(load_medmnist_items(data, "train"), 0.2, seed=seed).subject_ids
        (work / "request.txt").write_text("\n".join(forgotten) + "\n")
        common = {"dataset_dir": str(work / "data"), "model_dir": str(work / "models"), "batch_size": 64,
                  "max_epochs": 15, "experiment_name": "spread", "seed": seed}  # fmt: skip
        request = {"forget_request_file": str(work / "request.txt")}
        run_workflow(bundle, "train", **common)
        run_workflow(bundle, "train", **common, **request)
        for name in names:
            run_workflow(bundle, "unlearn", name, **common, **request)
        scores, losses = {}, {}
        for model in ("model", "retrained", *(f"unlearned_{name}" for name in names)):
            run_workflow(bundle, "evaluate", **common, **request, model_path=str(work / "models" / f"{model}.pt"))
            scores[model] = read_json(work / "models" / f"{model}.eval.json")
            items = read_json(work / "models" / f"{model}.items.json")
            losses[model] = float(np.mean(items["splits"]["forget"]["loss"]))

    def distance(model: str) -> float:
        splits = ("forget_acc", "retain_acc", "test_acc")
        return 100 * float(np.mean([abs(scores[model][key] - scores["retrained"][key]) for key in splits]))

    return {
        "drop": {name: scores["model"]["forget_acc"] - scores[f"unlearned_{name}"]["forget_acc"] for name in names},
        "loss_rise": {name: losses[f"unlearned_{name}"] - losses["model"] for name in names},
        "closer": {name: distance("model") - distance(f"unlearned_{name}") for name in names},
    }


def main() -> None:
    options = arguments()
    if options.setting:
        seed, threads = (int(part) for part in options.setting.split(","))
        print(json.dumps({"seed": seed, "threads": threads, **run_setting(seed)}))
        return
    path = options.results_dir / f"{NAME}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"settings": []}
    results["settings"] = [entry for entry in results["settings"] if set(QUANTITIES) <= entry.keys()]  # older format
    done = {(entry["seed"], entry["threads"]) for entry in results["settings"]}
    for seed in (int(s) for s in options.seeds.split(",")):
        for threads in (int(t) for t in options.threads.split(",")):
            if (seed, threads) in done:
                continue
            environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MLFLOW_DISABLE_TELEMETRY": "true"}
            output = subprocess.run([sys.executable, __file__, "--setting", f"{seed},{threads}"], env=environment,
                                    check=True, capture_output=True, text=True).stdout  # fmt: skip
            results["settings"].append(json.loads(output.strip().splitlines()[-1]))
            results["machine"] = machine()
            options.results_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2))
            print(f"seed {seed}, {threads} threads: done", flush=True)
    write_markdown(options.results_dir, results)


def write_markdown(results_dir: Path, results: dict) -> None:
    settings = results["settings"]
    names = sorted(settings[0]["drop"])
    columns = [("strategy", "strategy"), *((f"s{e['seed']}t{e['threads']}", f"seed {e['seed']}, {e['threads']} thr")
               for e in settings), ("mean", "mean"), ("std", "std"), ("min/std", "min / std")]  # fmt: skip
    sections = []
    for quantity, title in QUANTITIES.items():
        scale = 100 if quantity == "drop" else 1
        rows = []
        for name in names:
            values = scale * np.array([entry[quantity][name] for entry in settings])
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            row = {"strategy": name, "mean": f"{values.mean():+.2f}", "std": f"{spread:.2f}" if spread else "-"}
            row["min/std"] = f"{values.min() / spread:.1f}" if spread else "-"
            row |= {f"s{e['seed']}t{e['threads']}": f"{value:+.2f}" for e, value in zip(settings, values, strict=True)}
            rows.append(row)
        sections.append(f"## {title}\n\n" + markdown_table(rows, columns, lambda key, value: value))
    (results_dir / f"{NAME}.md").write_text(
        "# Outcome-test spread: TissueMNIST end-to-end setting\n\n"
        f"Machine: {results['machine']}. Per strategy and (seed, thread count): the forget-accuracy drop against the "
        "original model (points), the rise of the forget items' mean cross-entropy against the original (nats), and "
        "how much closer to the retrained model the strategy is than the original (points of mean absolute "
        "accuracy difference over forget, retain and test). A test asserting `quantity > 0` is sound when the "
        "smallest value is several standard deviations above 0 (min / std).\n\n" + "\n\n".join(sections) + "\n"
    )


if __name__ == "__main__":
    main()
