"""Where a MRBrainS18 training step spends its time: waiting for the batch or computing, per dataset and loader.

The MRBrainS18 bundle's train preprocessing (load NIfTI, orient, resample, map labels, normalise, crop the
foreground, pad, find foreground/background voxels, then random 3D crops), its network, inferer, loss,
optimizer and batch size, all read from ``bundles/mrbrains18_med3d_segmentation/configs``, on synthetic
subjects in the challenge layout. Each
combination of MONAI ``Dataset`` / ``CacheDataset`` / ``PersistentDataset`` (cache in a temporary folder) with
``DataLoader`` (0 or 2 worker processes) or ``ThreadDataLoader`` runs a few epochs of real training steps;
per step, *loader* is the time waiting for the next batch and *compute* the forward, backward and optimizer
step. The first epoch (cache building, worker start-up) and the steady state are reported apart, with the
set-up (``CacheDataset`` fills its cache when built) and a projection to the bundle's 100 training and 20
unlearning epochs. Writes benchmarks/results/data_pipeline_3d.{json,md}.

    python benchmarks/data_pipeline_3d.py                 # CPU sizes, about 3-4 minutes on 2 cores
    python benchmarks/data_pipeline_3d.py --preset gpu    # the challenge's resolution and the 96x96x32 crop
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import monai
import torch
from _report import add_results_dir, machine, markdown_table, write_results
from _workloads import MRBRAINS18, MRBRAINS18_PRESETS, mrbrains18_data
from monai.bundle import ConfigParser

from medunlearn_monai.workflows import bundle_dir, config_files

DATASETS = ("Dataset", "CacheDataset", "PersistentDataset")
LOADERS = (("DataLoader", 0), ("DataLoader", 2), ("ThreadDataLoader", 0))
PROJECTED_EPOCHS = {"train": 100, "unlearn": 20}  # train.json max_epochs, unlearn.json unlearn_epochs
COLUMNS = (
    ("setup", "data set + loader"),
    ("setup_seconds", "set-up s"),
    ("first_epoch_seconds", "1st epoch s"),
    ("first_loader_seconds", "1st epoch loader s"),
    ("steady_epoch_seconds", "steady epoch s"),
    ("steady_loader_per_step", "steady loader s/step"),
    ("steady_compute_per_step", "steady compute s/step"),
    ("steady_loader_share", "loader share"),
    ("data_wait_train_seconds", "100 epochs: data wait s"),
    ("projected_train_seconds", "100 epochs: total s"),
    ("data_wait_unlearn_seconds", "20 epochs: data wait s"),
    ("projected_unlearn_seconds", "20 epochs: total s"),
    ("cache_megabytes", "cache MB"),
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", choices=sorted(MRBRAINS18_PRESETS), default="gpu" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--subjects", type=int, default=7, help="synthetic subjects: 7 challenge IDs, then extras")
    parser.add_argument("--test_subjects", nargs="+", default=["148"], help="held out, as the bundle does")
    parser.add_argument("--depth", type=int, default=50, help="Med3D ResNet depth (the bundle's is 50)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per combination: the first, then steady state")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the multi-process DataLoader")
    parser.add_argument("--output_dir", default=None, help="work folder (default: a temporary one)")
    add_results_dir(parser)
    parser.add_argument("--results_name", default="data_pipeline_3d")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


class BundleTraining:
    """The bundle's train items, preprocessing, network, loss, optimizer and batch size, parsed once."""

    def __init__(self, overrides: dict[str, Any]):
        parser = ConfigParser()
        parser.read_config(config_files(MRBRAINS18, "train"))
        parser.update({"bundle_root": str(bundle_dir(MRBRAINS18)), **overrides})
        self.items = parser.get_parsed_content("train#items")
        # The bundle's own choice, read from train#dataset and train#dataloader.
        self.choice = (
            parser.get("train#dataset#_target_").split(".")[-1],
            parser.get("train#dataloader#_target_").split(".")[-1],
            parser.get_parsed_content("num_workers"),
        )
        # CacheDataset takes the bundle's own options (cache_rate, copy_cache, ...) when the bundle uses it.
        dataset = parser.get("train#dataset")
        self.cache_options = {"cache_rate": 1.0, "progress": False}
        if self.choice[0] == "CacheDataset":
            options = [key for key in dataset if key not in ("_target_", "data", "transform")]
            self.cache_options = {key: parser.get_parsed_content(f"train#dataset#{key}") for key in options}
        self.inferer = parser.get_parsed_content("train#inferer")
        self.transform = parser.get_parsed_content("train#preprocessing")
        self.network = parser.get_parsed_content("network")
        self.optimizer = parser.get_parsed_content("optimizer")
        self.loss = parser.get_parsed_content("loss")
        self.batch_size = parser.get_parsed_content("batch_size")
        self.device = parser.get_parsed_content("device")
        self.roi_size = parser.get_parsed_content("roi_size")
        self.crops_per_subject = parser.get_parsed_content("samples_per_subject")
        self.channels = len(parser.get_parsed_content("modalities"))
        if not any(p is q for p in self.network.parameters() for q in self.optimizer.param_groups[0]["params"]):
            raise RuntimeError("the parsed optimizer does not hold the parsed network's parameters")

    def step(self, batch: dict[str, Any]) -> None:
        """One step as the bundle's SupervisedTrainer takes it: inferer, mean loss, backward, optimizer step."""
        images = batch["image"].to(self.device)
        labels = batch["label"].to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.inferer(images, self.network), labels).mean().backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def warm_up(self) -> None:
        """One step on a random batch, so the first combination does not pay for first-call allocations."""
        crops = self.batch_size * self.crops_per_subject
        self.step({
            "image": torch.randn(crops, self.channels, *self.roi_size),
            "label": torch.randint(0, 2, (crops, 1, *self.roi_size), dtype=torch.uint8),
        })  # fmt: skip


def make_dataset(kind: str, training: BundleTraining, cache_dir: Path) -> monai.data.Dataset:
    if kind == "CacheDataset":
        return monai.data.CacheDataset(training.items, training.transform, **training.cache_options)
    if kind == "PersistentDataset":
        return monai.data.PersistentDataset(training.items, training.transform, cache_dir=cache_dir)
    return monai.data.Dataset(training.items, training.transform)


def make_loader(kind: str, workers: int, dataset: monai.data.Dataset, batch_size: int) -> torch.utils.data.DataLoader:
    loader_class = monai.data.ThreadDataLoader if kind == "ThreadDataLoader" else monai.data.DataLoader
    return loader_class(dataset, batch_size=batch_size, shuffle=True, drop_last=False, num_workers=workers)


def cache_megabytes(dataset: monai.data.Dataset, cache_dir: Path) -> float | None:
    """Memory held by a CacheDataset's cache, or disk used by a PersistentDataset's; None for a plain Dataset."""
    if isinstance(dataset, monai.data.CacheDataset):
        tensors = [value for item in dataset._cache for value in item.values() if isinstance(value, torch.Tensor)]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors) / 2**20
    if isinstance(dataset, monai.data.PersistentDataset):
        return sum(path.stat().st_size for path in cache_dir.rglob("*") if path.is_file()) / 2**20
    return None


def run_epoch(loader: torch.utils.data.DataLoader, training: BundleTraining) -> list[tuple[float, float]]:
    """``(loader seconds, compute seconds)`` of every step; the first wait includes starting the iterator."""
    steps = []
    waited_from = time.perf_counter()
    for batch in loader:
        received = time.perf_counter()
        training.step(batch)
        done = time.perf_counter()
        steps.append((received - waited_from, done - received))
        waited_from = time.perf_counter()
    return steps


def measure(setup: tuple[str, str, int], training: BundleTraining, epochs: int, work: Path) -> dict[str, Any]:
    """Build one data set and loader, train ``epochs`` epochs and summarise where the time went."""
    dataset_kind, loader_kind, workers = setup
    cache_dir = work / f"persistent_{loader_kind}_{workers}"
    shutil.rmtree(cache_dir, ignore_errors=True)  # a fresh cache: its first epoch is what a first run pays
    started = time.perf_counter()
    dataset = make_dataset(dataset_kind, training, cache_dir)
    loader = make_loader(loader_kind, workers, dataset, training.batch_size)
    setup_seconds = time.perf_counter() - started
    epoch_steps = []
    for _ in range(epochs):
        epoch_steps.append(run_epoch(loader, training))
    first, steady = epoch_steps[0], [step for steps in epoch_steps[1:] for step in steps]
    steady_epochs = [sum(load + compute for load, compute in steps) for steps in epoch_steps[1:]]
    first_seconds = sum(load + compute for load, compute in first)
    first_loader = sum(load for load, _ in first)
    steady_epoch = statistics.mean(steady_epochs)
    steady_loader = statistics.mean(load for load, _ in steady)
    steady_compute = statistics.mean(compute for _, compute in steady)
    label = f"{dataset_kind} + {loader_kind}" + (f" ({workers} workers)" if loader_kind == "DataLoader" else "")
    return {
        "setup": label,
        "dataset": dataset_kind,
        "loader": loader_kind,
        "num_workers": workers,
        "bundle_choice": setup == training.choice,
        "steps_per_epoch": len(first),
        "setup_seconds": setup_seconds,
        "first_epoch_seconds": first_seconds,
        "first_loader_seconds": first_loader,
        "first_compute_seconds": sum(compute for _, compute in first),
        "steady_epoch_seconds": steady_epoch,
        "steady_epoch_seconds_all": steady_epochs,
        "steady_loader_per_step": steady_loader,
        "steady_compute_per_step": steady_compute,
        "steady_loader_share": steady_loader / (steady_loader + steady_compute),
        **{
            f"data_wait_{name}_seconds": setup_seconds + first_loader + (count - 1) * steady_loader * len(first)
            for name, count in PROJECTED_EPOCHS.items()
        },
        **{
            f"projected_{name}_seconds": setup_seconds + first_seconds + (count - 1) * steady_epoch
            for name, count in PROJECTED_EPOCHS.items()
        },
        "cache_megabytes": cache_megabytes(dataset, cache_dir),
        "steps": [{"loader": load, "compute": compute} for steps in epoch_steps for load, compute in steps],
    }


def recommendation(rows: list[dict[str, Any]]) -> str:
    """Which combination makes the bundle wait least for data, and whether that beats the bundle's choice clearly.

    Ranking is by the data wait (set-up plus loader time), which is what the choice controls; compute of the same
    steps differs between combinations by measurement noise (estimated from the in-process DataLoader rows, which
    do identical work alone) and, with worker processes or a thread, by their contention for the cores.
    """
    in_process = [
        row["steady_compute_per_step"] for row in rows if row["loader"] == "DataLoader" and not row["num_workers"]
    ]
    noise = (max(in_process) - min(in_process)) / statistics.median(in_process) if len(in_process) > 1 else 0.0
    reference_compute = statistics.median(in_process or [row["steady_compute_per_step"] for row in rows])
    current = next((row for row in rows if row["bundle_choice"]), None)
    lines = []
    for name, count in PROJECTED_EPOCHS.items():
        wait, total = f"data_wait_{name}_seconds", f"projected_{name}_seconds"
        best = min(rows, key=lambda row: row[wait])
        heading = f"- {count} epochs ({name}): least waiting for data: {best['setup']} ({best[wait]:.0f} s"
        if current is None:
            lines.append(heading + ").")
            continue
        gain = (current[wait] - best[wait]) / current[total]
        if best is current or gain < 0.10:
            verdict = "keep the bundle's choice" + (
                f" ({current['setup']}, {current[wait]:.0f} s of waiting, {gain:.0%} of its projected "
                f"{current[total]:.0f} s above the best)"
                if best is not current
                else ""
            )
        else:
            verdict = (
                f"{gain:.0%} of the bundle's projected {current[total]:.0f} s would be saved over its choice, "
                f"{current['setup']} ({current[wait]:.0f} s of waiting): a large gain"
            )
        lines.append(f"{heading}); {verdict}.")
    for row in rows:
        slowdown = row["steady_compute_per_step"] / reference_compute - 1
        if (row["num_workers"] or row["loader"] == "ThreadDataLoader") and slowdown > max(noise, 0.05):
            lines.append(
                f"- {row['setup']}: compute per step {slowdown:.0%} slower than in-process loading (the loader "
                "competes with the training step for the cores)."
            )
    lines.append(
        f"- Noise: the same training step took from {min(in_process):.2f} to {max(in_process):.2f} s "
        f"({noise:.0%} spread) across the in-process DataLoader rows; differences in the totals below that are "
        "not the pipeline's."
        if len(in_process) > 1
        else "- Noise: not estimated (fewer than two in-process DataLoader rows)."
    )
    return "\n".join(lines)


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key == "steady_loader_share":
        return f"{value:.0%}"
    if key.endswith("per_step") or key in ("first_epoch_seconds", "first_loader_seconds", "steady_epoch_seconds"):
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    rows = [{**row, "setup": row["setup"] + (" **(bundle)**" if row["bundle_choice"] else "")}
            for row in report["rows"]]  # fmt: skip
    return (
        "# MRBrainS18 training data pipeline: loader time versus compute time\n\n"
        f"Machine: {report['machine']}; 5-minute load average {report['load_average_5min']['start']:.2f} at the "
        f"start, {report['load_average_5min']['end']:.2f} at the end. Whole run: {report['total_seconds'] / 60:.1f} "
        "min.\n\n"
        f"Settings: the bundle's train preprocessing and Med3D ResNet-{settings['depth']} training step "
        f"(batch {settings['batch_size']} subjects x {settings['crops_per_subject']} random crops of "
        f"{settings['roi_size']}), "
        f"{settings['train_subjects']} synthetic training subjects at spacing {settings['spacing']} mm, "
        f"{settings['epochs']} epochs per combination ({settings['steps_per_epoch']} steps each), "
        f"{settings['threads']} torch threads. The bundle's choice: {settings['bundle_choice']} workers; CacheDataset "
        f"with the options {settings['cache_dataset_options']}.\n\n"
        "*set-up s*: building the data set and loader (CacheDataset preprocesses every subject here); "
        "*1st epoch*: the first pass (PersistentDataset writes its cache, worker processes start); *steady*: "
        "the mean over the later epochs; *loader s/step*: waiting for the next batch; *compute s/step*: forward, "
        "loss, backward and optimizer step; *100 / 20 epochs*: the bundle's training and unlearning lengths "
        "(unlearning runs repeat the forget subject, so their epochs are longer), *data wait* = set-up + first "
        "epoch's loader time + the rest at the steady loader time, *total* = set-up + first epoch + the rest at "
        "the steady epoch time; *cache MB*: memory of the CacheDataset cache or disk of the PersistentDataset "
        "cache. Worker processes share the CPU cores with the compute, so compute time also changes between "
        "loaders.\n\n"
        + markdown_table(rows, COLUMNS, cell)
        + "\n\n## Recommendation\n\n"
        + report["recommendation"]
        + "\n"
    )


def main() -> None:
    options = arguments()
    if options.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch, then the steady state")
    started = time.perf_counter()
    load_before = os.getloadavg()[1]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(options.output_dir or scratch)
        overrides = mrbrains18_data(work, options.preset, options.subjects, options.test_subjects, options.depth,
                                    options.seed)  # fmt: skip
        monai.utils.set_determinism(seed=options.seed)
        training = BundleTraining(overrides)
        training.warm_up()
        rows = []
        for dataset_kind in options.datasets:
            for loader_kind, workers in LOADERS:
                workers = options.workers if workers else 0
                print(f"== {dataset_kind} + {loader_kind} ({workers} workers)", flush=True)
                rows.append(measure((dataset_kind, loader_kind, workers), training, options.epochs, work))
    settings = {
        "preset": options.preset,
        "spacing": MRBRAINS18_PRESETS[options.preset]["spacing"],
        "roi_size": training.roi_size,
        "depth": options.depth,
        "batch_size": training.batch_size,
        "crops_per_subject": training.crops_per_subject,
        "bundle_choice": " + ".join(str(part) for part in training.choice),
        "cache_dataset_options": training.cache_options,
        "train_subjects": len(training.items),
        "epochs": options.epochs,
        "steps_per_epoch": rows[0]["steps_per_epoch"],
        "threads": torch.get_num_threads(),
        "seed": options.seed,
    }
    report = {
        "machine": machine(),
        "settings": settings,
        "rows": rows,
        "recommendation": recommendation(rows),
        "total_seconds": time.perf_counter() - started,
        "load_average_5min": {"start": load_before, "end": os.getloadavg()[1]},
    }
    write_results(options.results_dir, options.results_name, report, markdown(report))


if __name__ == "__main__":
    main()
