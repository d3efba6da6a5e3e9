"""Spread of the TissueMNIST end-to-end outcome tests' asserted quantity over seeds and thread counts.

``tests/bundles/test_tissuemnist_bundle.py`` asserts that GA, RL and SalUn lower forget accuracy below the original
model's. This reruns that test's setting (480 synthetic training images, 20 % forgotten, 15 training epochs, batch
64, each strategy's shipped unlearn_epochs) for every (seed, thread count) asked, and records the drop
``forget_acc(original) - forget_acc(strategy)``: an outcome test is sound when the drop is several spreads above 0.
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
STRATEGIES = ("ga", "rl", "salun")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--setting", help=argparse.SUPPRESS)  # "seed,threads": run one setting in this process
    add_results_dir(parser)
    return parser.parse_args()


def run_setting(seed: int) -> dict[str, float]:
    """The test's pipeline at ``seed`` (model initialisation, data order and forget request): drop per strategy."""
    from medunlearn_monai.data.medmnist import load_medmnist_items
    from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
    from medunlearn_monai.forget import ForgetRequest
    from medunlearn_monai.model_io import read_json
    from medunlearn_monai.workflows import run_workflow

    bundle = "tissuemnist_resnet_classification"
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
        for name in STRATEGIES:
            run_workflow(bundle, "unlearn", name, **common, **request)
        scores = {}
        for model in ("model", *(f"unlearned_{name}" for name in STRATEGIES)):
            run_workflow(bundle, "evaluate", **common, **request, model_path=str(work / "models" / f"{model}.pt"))
            scores[model] = read_json(work / "models" / f"{model}.eval.json")["forget_acc"]
    return {name: scores["model"] - scores[f"unlearned_{name}"] for name in STRATEGIES}


def main() -> None:
    options = arguments()
    if options.setting:
        seed, threads = (int(part) for part in options.setting.split(","))
        print(json.dumps({"seed": seed, "threads": threads, "drop": run_setting(seed)}))
        return
    path = options.results_dir / f"{NAME}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"settings": []}
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
            print(f"seed {seed}, {threads} threads: {results['settings'][-1]['drop']}", flush=True)
    write_markdown(options.results_dir, results)


def write_markdown(results_dir: Path, results: dict) -> None:
    settings = results["settings"]
    rows = []
    for name in STRATEGIES:
        drops = np.array([entry["drop"][name] for entry in settings])
        spread = drops.std(ddof=1) if len(drops) > 1 else 0.0
        row = {"strategy": name, "mean": f"{100 * drops.mean():+.1f}", "std": f"{100 * spread:.1f}" if spread else "-"}
        row["min/std"] = f"{drops.min() / spread:.1f}" if spread else "-"
        row |= {f"s{entry['seed']}t{entry['threads']}": f"{100 * entry['drop'][name]:+.1f}" for entry in settings}
        rows.append(row)
    columns = [("strategy", "strategy"), *((f"s{e['seed']}t{e['threads']}", f"seed {e['seed']}, {e['threads']} thr")
               for e in settings), ("mean", "mean"), ("std", "std"), ("min/std", "min / std")]  # fmt: skip
    (results_dir / f"{NAME}.md").write_text(
        "# Outcome-test spread: TissueMNIST end-to-end setting\n\n"
        f"Machine: {results['machine']}. Forget-accuracy drop of each strategy against the original model, in "
        "points (original minus unlearned), per seed and thread count; the test asserts drop > 0, so it is sound "
        "when the smallest drop is several standard deviations above 0.\n\n"
        + markdown_table(rows, columns, lambda key, value: value)
        + "\n"
    )


if __name__ == "__main__":
    main()
