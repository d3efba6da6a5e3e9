"""MRBrainS18 subject unlearning: two data arms, two input regimes, several seeds, and two verdicts per row.

Singh, Singh and Arora (2026) forget one MRBrainS18 subject from a Med3D ResNet-50 segmenter and report, per
strategy, the forget-set Dice decrease and the retain-set Dice kept (in % of the original model) after 20 and 50
unlearning epochs; Noisy Label reached 93 % / 84 % at 50 epochs. Two questions are kept apart here:

- *paper-style forgetting*: destroy the forget subject's segmentation and keep the others' (forget decrease
  >= 80 % and retain kept >= 80 %, means over seeds);
- *exact-style unlearning*: be indistinguishable from a model retrained without the subject (gap to retrain, the
  mean absolute difference of retain, forget and test Dice, at most 2 points), read next to the **noise floor**: a
  second exact retraining (seed + 1000, same data and request) scored against the first, and the original model's
  own gap (what doing nothing scores).

Both are asked on two synthetic arms (``medunlearn synthesize --arm``): ``alike`` (every subject a deformation of
one template, so a retrained model still segments the forgotten one well) and ``distinct`` (the forgotten subject
has another scanner's FLAIR and an infarct only it has, so a retrained model segments it worse), in the bundle's
``patch`` and ``whole`` input regimes, for every method x {20, 50} unlearning epochs x seeds. A seed changes the
synthetic subjects, the model's initialisation and the data order. The 20-epoch model of each method is a snapshot of
its 50-epoch run (:class:`medunlearn_monai.model_io.ModelSnapshots`; none of these methods reads the run's length, so
it is the model a 20-epoch run writes), and its seconds are the run's seconds up to that epoch.

Each (arm, regime, seed) is one work folder under ``--work_dir`` whose finished steps are skipped on a rerun (a
model with its evaluation beside it is done), so an interrupted run resumes; configurations can run in separate
processes (``--configs``) and the results files are rewritten from every finished folder after each one:

    OMP_NUM_THREADS=1 python benchmarks/mrbrains18_unlearning.py --work_dir benchmarks/work/mrbrains18
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import monai.bundle
import numpy as np
from _report import add_results_dir, machine, markdown_table, plus_minus

from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18
from medunlearn_monai.metrics.dice import forget_dice_gap
from medunlearn_monai.metrics.gap import avg_gap
from medunlearn_monai.metrics.segmentation import SEGMENTATION_GAP_METRICS
from medunlearn_monai.records import evaluation_path, read_json
from medunlearn_monai.studies.protocol import NOISE, NOISE_SEED_OFFSET
from medunlearn_monai.workflows import bundle_dir, config_files, run_workflow

BUNDLE = "mrbrains18_med3d_segmentation"
NAME = "mrbrains18_unlearning"
ARMS = ("alike", "distinct")
REGIMES = ("patch", "whole")
HORIZONS = (20, 50)
# Row name -> (strategy, its overrides). Noisy Label in each noise mode (our readings of the paper's description),
# the paper's LearnNoise and Max Loss (NegGrad+), and SalUn on voxel outputs.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "noisy_label_fresh": ("noisy_label", {"noise": "fresh"}),
    "noisy_label_fixed": ("noisy_label", {"noise": "fixed"}),
    "noisy_label_flip": ("noisy_label", {"noise": "flip"}),
    "noisy_label_background": ("noisy_label", {"noise": "background"}),
    "learn_noise": ("learn_noise", {}),
    "neggrad_plus": ("neggrad_plus", {}),
    "salun": ("salun", {}),
}
SUBJECTS = ("1", "4", "5", "7", "14", "070", "148", "200", "201")  # the challenge's 7 IDs, then 2 extra
FORGOTTEN = "4"
TEST_SUBJECTS = ["200", "201"]
# ``cpu``: CPU-feasible sizes (2 cores, 12 configurations in about two hours): a quarter of the challenge's in-plane
# resolution and half its slices, MedicalNet's smallest ResNet, whole volumes of about twice a patch's voxels.
# ``full``: the challenge's spacing, the bundle's training crop and MedicalNet's 448 x 448 x 56 whole volume (x, y, z),
# ResNet-50: the paper's setting, for a GPU.
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"depth": 10, "spacing": [4.0, 4.0, 6.0], "roi_size": [32, 32, 16], "whole_size": [40, 40, 20],
            "train_epochs": 30},
    "full": {"depth": 50, "spacing": [0.958, 0.958, 3.0], "roi_size": [96, 96, 32], "whole_size": [448, 448, 56],
             "train_epochs": 30},
}  # fmt: skip
PAPER_STYLE = {"forget_decrease_pct": 80.0, "retain_kept_pct": 80.0}
EXACT_STYLE_GAP = 2.0  # Dice points
PAPER_NOISY_LABEL_50 = {"forget_decrease_pct": 93.0, "retain_kept_pct": 84.0}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", type=Path, default=Path("benchmarks/work/mrbrains18"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--methods", default=",".join(METHODS), help="'' for the references and noise floor only")
    parser.add_argument("--horizons", default=",".join(map(str, HORIZONS)))
    parser.add_argument("--size", choices=sorted(SIZE_PRESETS), default="cpu", help="spacing, crop and volume sizes")
    parser.add_argument("--depth", type=int, default=None, help="Med3D ResNet depth 10|18|34|50 (default: the size's)")
    parser.add_argument("--train_epochs", type=int, default=None, help="default: the size's")
    parser.add_argument("--data_only", action="store_true", help="write the configurations' subjects and stop")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (the bundle's `amp`), for a GPU")
    parser.add_argument("--configs", default=None, help="only these arm/regime/seed folders, e.g. alike/patch/0")
    parser.add_argument("--name", default=NAME, help=f"results files <results_dir>/<name>.json|md (default {NAME})")
    add_results_dir(parser)
    options = parser.parse_args()
    given = {"depth": options.depth, "train_epochs": options.train_epochs}
    options.sizes = {**SIZE_PRESETS[options.size], **{key: value for key, value in given.items() if value}}
    return options


def configurations(options: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(arm, regime, seed) in the order they run; ``--configs`` picks some."""
    # Seed by seed, so an interrupted benchmark has every arm and regime at the seeds it finished.
    every = [(arm, regime, seed) for seed, arm, regime in
             itertools.product(_ints(options.seeds), options.arms.split(","), options.regimes.split(","))]  # fmt: skip
    if options.configs is None:
        return every
    chosen = {tuple(part.split("/")) for part in options.configs.split(",")}
    return [config for config in every if (config[0], config[1], str(config[2])) in chosen]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def run_configuration(options: argparse.Namespace, arm: str, regime: str, seed: int) -> None:
    """Original, retrained and every method at every horizon, evaluated, in ``work_dir/arm/regime/seed``, with its
    own MLflow store (configurations may run in parallel processes); the wall seconds add up in ``seconds.json``."""
    started = time.perf_counter()
    folder = options.work_dir / arm / regime / str(seed)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    data = write_data(options, arm, regime, seed)
    sizes = options.sizes
    (folder / "request.txt").write_text(FORGOTTEN + "\n")
    models = folder / "models"
    common = {
        "dataset_dir": str(data), "model_dir": str(models), "depth": sizes["depth"], "pixdim": sizes["spacing"],
        "roi_size": sizes["roi_size"], "whole_size": sizes["whole_size"], "input_regime": regime, "amp": options.amp,
        "test_subjects": TEST_SUBJECTS, "seed": seed, "experiment_name": f"{NAME}-{arm}-{regime}",
    }  # fmt: skip
    request = {"forget_request_file": str(folder / "request.txt")}
    training = {"max_epochs": sizes["train_epochs"], "val_interval": sizes["train_epochs"]}
    _run_once(models / "model.pt", "train", None, **common, **training)
    _run_once(models / "retrained.pt", "train", None, **common, **training, **request)
    floor = {"seed": seed + NOISE_SEED_OFFSET, "data_seed": seed, "output_model": str(models / f"{NOISE}.pt")}
    _run_once(models / f"{NOISE}.pt", "train", None, **{**common, **floor}, **training, **request)
    for model in ("model", "retrained", NOISE):
        _evaluate(common, request, models / f"{model}.pt")
    horizons = sorted(_ints(options.horizons))
    for method in filter(None, options.methods.split(",")):
        strategy, overrides = METHODS[method]
        # One run of the longest budget; the shorter budgets are its snapshots (none of these methods reads the
        # run's length: tests/test_model_io.py shows a snapshot equals the shorter run).
        template = str(models / f"unlearned_{method}_{{epoch}}.pt")
        paths = [Path(template.format(epoch=epochs)) for epochs in horizons]
        unlearning = {"unlearn_epochs": horizons[-1], "output_model": str(paths[-1]), **overrides}
        if not all(path.is_file() for path in paths):
            snapshots = _snapshot_config(folder, template, horizons[:-1])
            print(f"== {paths[-1]} (snapshots at {horizons[:-1]})", flush=True)
            _run_unlearning(strategy, snapshots, **common, **request, **unlearning)
        for path in paths:
            _evaluate(common, request, path)
    spent = folder / "seconds.json"
    earlier = read_json(spent)["seconds"] if spent.is_file() else 0.0
    spent.write_text(json.dumps({"seconds": earlier + time.perf_counter() - started}))


def write_data(options: argparse.Namespace, arm: str, regime: str, seed: int) -> Path:
    """The configuration's synthetic subjects (written once; ``--data_only`` writes them ahead, e.g. on the CPU while
    a GPU is busy with something else)."""
    data = options.work_dir / arm / regime / str(seed) / "data"
    if not (data / "training").is_dir():
        distinct = {"arm": "distinct", "distinct_subjects": [FORGOTTEN]} if arm == "distinct" else {}
        write_synthetic_mrbrains18(data, len(SUBJECTS), tuple(options.sizes["spacing"]), seed=seed,
                                   subject_ids=list(SUBJECTS), **distinct)  # fmt: skip
    return data


def _run_once(model: Path, workflow: str, strategy: str | None, **overrides: Any) -> None:
    """Run the workflow that writes ``model`` unless an earlier run already wrote it."""
    if not model.is_file():
        print(f"== {model}", flush=True)
        run_workflow(BUNDLE, workflow, strategy, **overrides)


def _snapshot_config(folder: Path, template: str, epochs: list[int]) -> Path:
    """A config layered after the bundle's unlearn configs that saves the model after each of ``epochs``."""
    path = folder / "snapshots.json"
    snapshots = {"_target_": "medunlearn_monai.model_io.ModelSnapshots", "epochs": epochs, "path_template": template,
                 "record": "$dict(@run_params, **@hyperparameters)", "source_model": "@source_model"}  # fmt: skip
    path.write_text(json.dumps({"+initial_handlers": [snapshots]}, indent=2))
    return path


def _run_unlearning(strategy: str, overlay: Path, **overrides: Any) -> None:
    """The bundle's unlearn workflow as ``run_workflow`` runs it, with ``overlay`` layered after its configs (a
    half-written run is replaced: its model file is written last, so a rerun starts it again)."""
    root = bundle_dir(BUNDLE)
    configs = root / "configs"
    monai.bundle.run(
        config_file=[*config_files(root, "unlearn", strategy), str(overlay)],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        bundle_root=str(root),
        **overrides,
    )


def _evaluate(common: Mapping[str, Any], request: Mapping[str, Any], model: Path) -> None:
    if not evaluation_path(model).is_file():
        run_workflow(BUNDLE, "evaluate", **common, **request, model_path=str(model))


def folder_rows(folder: Path) -> list[dict[str, Any]]:
    """One row per evaluated model of a finished configuration folder."""
    rows = []
    for path in sorted((folder / "models").glob("*.eval.json")):
        stem = path.name.removesuffix(".eval.json")
        if stem == "model":
            method, epochs = "original", None
        elif stem == "retrained":
            method, epochs = "retrain", None
        elif stem == NOISE:
            method, epochs = "noise_floor", None
        else:
            method, _, epochs = stem.removeprefix("unlearned_").rpartition("_")
            epochs = int(epochs)
        evaluation = read_json(path)
        seconds = read_json(path.parent / f"{stem}.json")["seconds"]
        rows.append({"method": method, "epochs": epochs, "seconds": seconds, **evaluation})
    retrained = next(row for row in rows if row["method"] == "retrain")
    for row in rows:  # the evaluation scores the gap of unlearned models only; the floor and the original get it here
        if row["method"] in ("original", "noise_floor"):
            row["gap_to_retrain"] = avg_gap(row, retrained, SEGMENTATION_GAP_METRICS)
            row.update(forget_dice_gap(row, retrained))
    return rows


def summary(work_dir: Path) -> dict[str, Any]:
    """Per arm, regime, method and epochs: means and stds over the seeds found, and the two verdicts."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    seeds: dict[tuple[str, str], list[str]] = {}
    seconds = 0.0
    for folder in sorted(work_dir.glob("*/*/*")):
        if not (folder / "seconds.json").is_file():
            continue  # not finished yet
        seconds += read_json(folder / "seconds.json")["seconds"]
        arm, regime, seed = folder.relative_to(work_dir).parts
        seeds.setdefault((arm, regime), []).append(seed)
        for row in folder_rows(folder):
            groups.setdefault((arm, regime, row["method"], row["epochs"]), []).append(row)
    keys = {
        "forget_decrease_pct": "forget_dice_decrease_pct",
        "retain_kept_pct": "retain_dice_kept_pct",
        "test_kept_pct": "test_dice_kept_pct",
        "gap_to_retrain": "gap_to_retrain",
        "forget_gap_to_retrain": "forget_dice_gap_to_retrain",
        "forget_dice": "forget_dice",
        "retain_dice": "retain_dice",
        "test_dice": "test_dice",
        "forget_hard_mae": "forget_hard_mae",
        "mia_loss_auc": "mia_loss_auc",
        "seconds": "seconds",
    }
    rows = []
    for (arm, regime, method, epochs), found in sorted(groups.items(), key=lambda item: _order(item[0])):
        row: dict[str, Any] = {"arm": arm, "regime": regime, "method": method, "epochs": epochs, "seeds": len(found)}
        for name, metric in keys.items():
            values = [entry[metric] for entry in found if entry.get(metric) is not None]
            row[f"{name}_mean"] = float(np.mean(values)) if values else None
            row[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        if method not in ("original", "retrain", "noise_floor"):
            row["paper_style_success"] = bool(
                row["forget_decrease_pct_mean"] >= PAPER_STYLE["forget_decrease_pct"]
                and row["retain_kept_pct_mean"] >= PAPER_STYLE["retain_kept_pct"]
            )
            row["exact_style_success"] = bool(row["gap_to_retrain_mean"] <= EXACT_STYLE_GAP)
        rows.append(row)
    return {
        "rows": rows,
        "seeds": {f"{arm}/{regime}": found for (arm, regime), found in seeds.items()},
        "configuration_seconds": seconds,
    }


def _order(key: tuple) -> tuple:
    arm, regime, method, epochs = key
    names = ["original", "retrain", "noise_floor", *METHODS]
    return ARMS.index(arm), REGIMES.index(regime), epochs or 0, names.index(method) if method in names else 99


def markdown(report: Mapping[str, Any]) -> str:
    def cell(key: str, value: Any) -> str:
        if key in ("paper_style_success", "exact_style_success"):
            return "-" if value is None else ("yes" if value else "no")
        if value is None:
            return "-"
        return str(value)

    rows = []
    for row in report["summary"]["rows"]:
        shown = {key: row.get(key) for key in ("arm", "regime", "method", "epochs", "seeds", "paper_style_success",
                                               "exact_style_success")}  # fmt: skip
        for name, digits in (("forget_decrease_pct", 1), ("retain_kept_pct", 1), ("gap_to_retrain", 2),
                             ("forget_gap_to_retrain", 2), ("mia_loss_auc", 3)):  # fmt: skip
            shown[name] = plus_minus(row.get(f"{name}_mean"), row.get(f"{name}_std"), digits=digits)
        shown["forget_dice"] = plus_minus(row.get("forget_dice_mean"), row.get("forget_dice_std"), digits=3)
        rows.append(shown)
    columns = [("arm", "arm"), ("regime", "regime"), ("method", "method"), ("epochs", "epochs"), ("seeds", "seeds"),
               ("forget_dice", "forget Dice"), ("forget_decrease_pct", "forget decrease %"),
               ("retain_kept_pct", "retain kept %"), ("gap_to_retrain", "gap to retrain"),
               ("forget_gap_to_retrain", "forget gap"), ("mia_loss_auc", "loss-attack AUC"),
               ("paper_style_success", "paper-style"), ("exact_style_success", "exact-style")]  # fmt: skip
    settings = report["settings"]
    return (
        "# MRBrainS18 subject unlearning: arms, input regimes, seeds\n\n"
        f"Machine: {report['machine']}. Med3D ResNet-{settings['depth']}, {len(SUBJECTS)} synthetic subjects "
        f"({len(TEST_SUBJECTS)} held out for test, subject {FORGOTTEN} forgotten), spacing {settings['spacing']} mm, "
        f"patches {settings['roi_size']} or whole volumes resized to {settings['whole_size']}, "
        f"{'bfloat16 autocast' if settings.get('amp') else 'float32'}, original and retrained "
        f"models {settings['train_epochs']} epochs, binary label merge; mean ± std over seeds "
        f"{report['summary']['seeds']}. Wall time: {report['summary']['configuration_seconds'] / 60:.0f} min of "
        "configuration runs in all (one process each; several may have run side by side).\n\n"
        "Forget decrease and retain kept are relative to the original model (for `retrain`: the retrained model's "
        "own). `noise_floor` is a second exact retraining (seed + 1000, same data and request); its gap to retrain, "
        "and the original model's, are scored here from the Dice values (the evaluation scores unlearned models "
        "only): a gap within the floor's is no difference from retraining, and one near the original's is doing "
        "nothing. Paper-style success: forget decrease >= 80 % and retain kept >= 80 % (means). Exact-style success: "
        "gap to retrain (mean absolute difference of retain, forget and test Dice, points) <= 2. The forget gap is "
        "|forget Dice - retrained forget Dice| in points. The loss-attack AUC tells the forget subject from the test "
        "subjects by per-subject loss (one forget subject: 0 or 1 or 0.5 per seed, a weak lower bound on leakage). "
        f"The paper's Noisy Label at 50 epochs: {PAPER_NOISY_LABEL_50['forget_decrease_pct']:.0f} % / "
        f"{PAPER_NOISY_LABEL_50['retain_kept_pct']:.0f} %.\n\n" + markdown_table(rows, columns, cell) + "\n"
    )


def write_report(options: argparse.Namespace) -> None:
    """Rewrite the results files from every finished folder (locked: several processes may finish at once)."""
    options.results_dir.mkdir(parents=True, exist_ok=True)
    with open(options.results_dir / f".{options.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        settings = {**options.sizes, "size": options.size, "amp": options.amp,
                    "subjects": list(SUBJECTS), "forgotten": FORGOTTEN, "test_subjects": TEST_SUBJECTS}  # fmt: skip
        report = {"machine": machine(), "settings": settings, "summary": summary(options.work_dir)}
        (options.results_dir / f"{options.name}.json").write_text(json.dumps(report, indent=2))
        (options.results_dir / f"{options.name}.md").write_text(markdown(report))


def main() -> None:
    options = arguments()
    options.work_dir = options.work_dir.resolve()
    if options.data_only:
        for arm, regime, seed in configurations(options):
            write_data(options, arm, regime, seed)
        return
    for arm, regime, seed in configurations(options):
        run_configuration(options, arm, regime, seed)
        write_report(options)
        print(f"{arm}/{regime}/{seed} done; results in {options.results_dir / options.name}.md", flush=True)


if __name__ == "__main__":
    main()
