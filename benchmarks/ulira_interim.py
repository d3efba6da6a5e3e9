"""U-LiRA AUCs of a protocol work folder for the seeds and shadow pairs that have finished (an interim report).

The protocol writes U-LiRA into its results only when every seed is done; a run cut short by the end of a session
still holds finished shadow pairs. This reads them, per seed, with the protocol's own attack
(``medunlearn_monai.studies.ulira.ulira_aucs``), and writes ``<name>.json`` / ``.md``:

    python benchmarks/ulira_interim.py --work_dir benchmarks/work/breastmnist/protocol --seeds 0,2 --pairs 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _report import add_results_dir, machine, markdown_table, plus_minus
from classification_protocol import STRATEGIES

from medunlearn_monai.records import evaluation_path
from medunlearn_monai.studies.protocol import NOISE, NOISE_FLOOR, ULIRA
from medunlearn_monai.studies.ulira import ulira_aucs


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", type=Path, required=True, help="the protocol's work folder (its seed_* folders)")
    parser.add_argument("--seeds", required=True)
    parser.add_argument("--pairs", type=int, required=True, help="K: shadow pairs 1..K of every seed")
    parser.add_argument("--fraction", default="0.1", help="the headline forget fraction")
    parser.add_argument("--name", default="ulira_interim")
    add_results_dir(parser)
    return parser.parse_args()


def seed_aucs(folder: Path, pairs: int) -> dict[str, float]:
    """U-LiRA AUC per method (and the noise floor) of one seed against its first ``pairs`` shadow pairs."""
    shadows = [folder / ULIRA / f"pair_{pair}" for pair in range(1, pairs + 1)]
    models = ["retrained", NOISE, *(f"unlearned_{name}" for name in STRATEGIES)]
    missing = [f"{shadow.name}/{model}" for shadow in shadows for model in models
               if not evaluation_path(shadow / f"{model}.pt").is_file()]  # fmt: skip
    if missing:
        raise SystemExit(f"{folder}: not evaluated yet: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    aucs = ulira_aucs(folder, shadows, [*STRATEGIES, NOISE_FLOOR], {NOISE_FLOOR: f"{NOISE}.pt"})
    return {name.removeprefix("ulira_auc_"): value for name, value in aucs.items()}


def main() -> None:
    options = arguments()
    seeds = [int(seed) for seed in options.seeds.split(",")]
    per_seed = {seed: seed_aucs(options.work_dir / f"seed_{seed}" / f"forget_{options.fraction}", options.pairs)
                for seed in seeds}  # fmt: skip
    methods = [NOISE_FLOOR, *STRATEGIES]
    summary = {
        name: {
            "ulira_auc_mean": float(np.mean([per_seed[seed][name] for seed in seeds])),
            "ulira_auc_std": float(np.std([per_seed[seed][name] for seed in seeds], ddof=1))
            if len(seeds) > 1
            else None,
        }
        for name in methods
    }
    report = {"seeds": seeds, "shadow_pairs": options.pairs, "forget_fraction": float(options.fraction),
              "per_seed": per_seed, "methods": summary, "machine": machine()}  # fmt: skip
    options.results_dir.mkdir(parents=True, exist_ok=True)
    (options.results_dir / f"{options.name}.json").write_text(json.dumps(report, indent=2))
    rows = [{"method": name, **{f"seed {seed}": f"{per_seed[seed][name]:.3f}" for seed in seeds},
             "mean": plus_minus(summary[name]["ulira_auc_mean"], summary[name]["ulira_auc_std"], digits=3)}
            for name in methods]  # fmt: skip
    columns = [("method", "method"), *((f"seed {seed}", f"seed {seed}") for seed in seeds), ("mean", "mean ± std")]
    markdown = (
        f"# U-LiRA, interim: seeds {', '.join(map(str, seeds))}, {options.pairs} shadow pairs each\n\n"
        f"Work folder `{options.work_dir.parent.name}/{options.work_dir.name}` of a protocol run, forget fraction "
        f"{options.fraction}; machine: "
        f"{report['machine']}. Per-example likelihood-ratio attack (U-LiRA) telling each method's model from the "
        "exact retraining on the forget items; 0.5 is chance, and `noise_floor` is what the attack reads between two "
        "exact retrainings. An AUC is a lower bound on leakage, not proof of its absence. Interim: the protocol's "
        "full run had not finished every seed.\n\n" + markdown_table(rows, columns, lambda key, value: value) + "\n"
    )
    (options.results_dir / f"{options.name}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
