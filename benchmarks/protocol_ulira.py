"""Add U-LiRA to an arm of the classification protocol's results, from a later run that trained the shadow pairs.

The protocol's headline table (``classification_protocol.json``) keeps the speedups of an uncontended run; the
U-LiRA shadow pairs (K per seed, each with every method) were trained later, by the same protocol on the same seeds,
while other work shared the cores, so that run's timings are not used. Its AUCs belong to the table's models only
if that run rebuilt the same models: this script checks that each method's main-phase gap to retrain, averaged over
the seeds, equals the table's (runs on one machine kind are deterministic at a fixed thread count), refuses to merge
otherwise, and writes the per-method U-LiRA AUC (mean ± std over seeds; the noise floor's too) into the arm:

    python benchmarks/protocol_ulira.py --arm breastmnist --work_dir benchmarks/work/breastmnist/protocol \
        --seeds 0,1,2 --pairs 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _report import add_results_dir
from classification_protocol import NAME, STRATEGIES, write_report
from ulira_interim import seed_aucs

from medunlearn_monai.records import read_json
from medunlearn_monai.studies.protocol import NOISE, NOISE_FLOOR

TOLERANCE = 1e-6  # points of Avg. Gap


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=("synthetic_tissuemnist", "breastmnist"), required=True)
    parser.add_argument("--work_dir", type=Path, required=True, help="the U-LiRA run's protocol folder (seed_*)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pairs", type=int, required=True, help="K: shadow pairs 1..K of every seed")
    parser.add_argument("--fraction", default="0.1", help="the headline forget fraction")
    add_results_dir(parser)
    return parser.parse_args()


def main_phase_gaps(folder: Path) -> dict[str, float]:
    """Each method's (and the noise floor's) gap to retrain in one seed's main phase."""
    models = {**{name: f"unlearned_{name}" for name in STRATEGIES}, NOISE_FLOOR: NOISE}
    return {name: float(read_json(folder / f"{model}.eval.json")["gap_to_retrain"]) for name, model in models.items()}


def _mean_std(values: list[float]) -> dict[str, float | None]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def main() -> None:
    options = arguments()
    seeds = [int(seed) for seed in options.seeds.split(",")]
    folders = {seed: options.work_dir / f"seed_{seed}" / f"forget_{options.fraction}" for seed in seeds}
    path = options.results_dir / f"{NAME}.json"
    entry = json.loads(path.read_text())["arms"][options.arm]
    if entry["seeds"] != seeds:
        raise SystemExit(f"the table's {options.arm} arm has seeds {entry['seeds']}, not {seeds}.")
    gaps = {seed: main_phase_gaps(folder) for seed, folder in folders.items()}
    table = {
        **{name: entry["methods"][name]["gap_mean"] for name in STRATEGIES},
        NOISE_FLOOR: entry["noise_floor"]["gap_mean"],
    }
    differences = {name: abs(np.mean([gaps[seed][name] for seed in seeds]) - table[name]) for name in table}
    mismatched = {name: round(value, 4) for name, value in differences.items() if value > TOLERANCE}
    if mismatched:
        raise SystemExit(
            f"the U-LiRA run's main-phase gaps differ from the table's (points): {mismatched}; not merged."
        )
    aucs = {seed: seed_aucs(folder, options.pairs) for seed, folder in folders.items()}
    for name in (*STRATEGIES, NOISE_FLOOR):
        stats = _mean_std([aucs[seed][name] for seed in seeds])
        target = entry["noise_floor"] if name == NOISE_FLOOR else entry["methods"][name]
        target["ulira_auc_mean"], target["ulira_auc_std"] = stats["mean"], stats["std"]
    entry["ulira_shadow_pairs"] = options.pairs
    entry["ulira"] = {
        "per_seed": {str(seed): aucs[seed] for seed in seeds},
        "main_phase_gap_max_difference": max(differences.values()),
        "source": "shadow pairs trained by a later run of this protocol (same seeds and data); its main-phase gaps "
        "equal this table's, so its AUCs are those of these models; its timings are not used",
    }
    write_report(options.results_dir, {options.arm: entry})
    print(json.dumps({name: entry["methods"].get(name, entry["noise_floor"]).get("ulira_auc_mean")
                      for name in (*STRATEGIES, NOISE_FLOOR)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
