"""Framework overhead: the bundle's training engine with all its handlers versus a minimal PyTorch loop.

For the 2D ResNet-18 of ``tissuemnist_resnet_classification`` and the 3D Med3D segmenter of
``mrbrains18_med3d_segmentation``, on synthetic data written by ``medunlearn_monai.data.synthetic``:

- ``bundle``: the ``SupervisedTrainer`` built from the bundle's ``common.json`` + ``train.json`` by
  ``monai.bundle.ConfigWorkflow`` (its ``initialize`` runs first: MLflow run, seed), with every handler the
  bundle ships: LR schedule, validation, ignite ``ProgressBar``, MLflow metrics, model writer, certificate
  writer, run checkpointer. Validation is set to run every ``epochs + 1`` epochs, so never inside the
  measurement: it is not part of a training step.
- ``plain``: a hand-written loop over the same network, optimizer, LR schedule and loss (built from the same
  config), with batches from a plain ``torch.utils.data.DataLoader`` over the bundle's pre-processed tensors
  (for the 3D model, random positive/negative crops cut by tensor slicing, as ``RandCropByPosNegLabeld`` cuts
  them), and one ``torch.save`` of the weights at the end, as a script must.
- ``before``: the bundle's trainer with the defaults it had before the overhead fixes, as overrides; and
  ``without <fix>``: the shipped bundle with that one fix reverted (``Workload.ablate``).

Two more workloads swap the networks for one layer (``tissuemnist_linear``: a linear layer; ``mrbrains18_conv``:
a 1x1x1 convolution): the step then costs almost nothing, and what remains is the engine's, handlers' and data
pipeline's own cost per step, the part a fast GPU step would pay.

Each arm trains the same number of optimizer steps; only ``trainer.run()`` / the loop is timed (building the
workflow, caching the data set and the MLflow run's start and end are not), by wall clock and by the process's
CPU time (less sensitive to other processes on a shared machine). Arms run alternately in one process, in a
rotated order each round, after a one-epoch warm-up of ``plain`` and ``bundle``. Throughput and ratios cover
the epochs after the first (a long run's steady state, epoch-end handlers and checkpoints included); whole-run
ratios add the first epoch and the once-per-run work. Ratios are medians of the per-round ratios arm / plain.
Writes benchmarks/results/framework_overhead.json and .md; about 6 minutes on 2 CPU cores with one torch thread.

    python benchmarks/framework_overhead.py [--rounds N] [--epochs N] [--workloads tissuemnist mrbrains18 ...]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _report import add_results_dir, machine, markdown_table, write_results
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.utils import convert_to_tensor, set_determinism
from torch.utils.data import DataLoader, Dataset, TensorDataset

from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18, write_synthetic_tissuemnist
from medunlearn_monai.workflows import bundle_dir, config_files

MRBRAINS18_SPACING = [1.916, 1.916, 3.0]


@dataclass
class Workload:
    """One model and its data: how to write the data, the bundle's overrides, and the plain loop's batches.

    ``before`` holds the overrides that restore the defaults from before the overhead fixes and ``ablate`` the
    fixes (keys of ``FIXES``) measured one by one, each reverted alone in an arm of its own.
    """

    name: str
    bundle: str
    data: str
    unit: str
    overrides: dict[str, Any]
    plain_loader: Callable[[ConfigParser], DataLoader]
    samples_per_step: Callable[[ConfigParser], int]
    before: dict[str, Any]
    ablate: tuple[str, ...] = ()
    rounds: int = 3
    epochs: int = 2


def tissuemnist_loader(parser: ConfigParser) -> DataLoader:
    """The bundle's pre-processed training images as tensors, in shuffled batches that drop the last one."""
    preprocessing = parser.get_parsed_content("preprocessing")
    items = [preprocessing(dict(item)) for item in parser.get_parsed_content("train#items")]
    images = torch.stack([convert_to_tensor(item["image"], track_meta=False) for item in items])
    labels = torch.as_tensor([item["label"] for item in items])
    return DataLoader(
        TensorDataset(images, labels), batch_size=parser.get_parsed_content("batch_size"), shuffle=True, drop_last=True
    )


class PosNegCrops(Dataset):
    """Pre-processed subjects; each item is ``samples`` random crops centred on foreground or background voxels.

    A hand-written equivalent of the bundle's ``RandCropByPosNegLabeld`` (pos = neg = 1): the centre is a random
    label-foreground voxel with probability 1/2, else a random background voxel, moved inward so the crop fits.
    """

    def __init__(self, subjects: list[tuple[torch.Tensor, torch.Tensor]], roi_size: list[int], samples: int):
        self.subjects = subjects
        self.roi_size = roi_size
        self.samples = samples
        self.voxels = [(np.flatnonzero(label.numpy() > 0), np.flatnonzero(label.numpy() == 0)) for _, label in subjects]
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.subjects[index]
        shape = image.shape[1:]
        images, labels = [], []
        for _ in range(self.samples):
            voxels = self.voxels[index][0 if self.rng.random() < 0.5 else 1]
            centre = np.unravel_index(voxels[self.rng.integers(len(voxels))], shape)
            starts = [min(max(int(c) - r // 2, 0), n - r) for c, r, n in zip(centre, self.roi_size, shape, strict=True)]
            window = (slice(None), *(slice(start, start + r) for start, r in zip(starts, self.roi_size, strict=True)))
            images.append(image[window])
            labels.append(label[window])
        return torch.stack(images), torch.stack(labels)


def concatenate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Subjects' crops as one batch of crops, as MONAI's ``list_data_collate`` makes them."""
    return torch.cat([images for images, _ in batch]), torch.cat([labels for _, labels in batch])


def mrbrains18_loader(parser: ConfigParser) -> DataLoader:
    """The bundle's deterministic pre-processing applied once per subject; random crops per epoch."""
    preprocessing = parser.get_parsed_content("preprocessing")
    subjects = []
    for item in parser.get_parsed_content("train#items"):
        ready = preprocessing(dict(item))
        subjects.append(tuple(convert_to_tensor(ready[key], track_meta=False) for key in ("image", "label")))
    crops = PosNegCrops(
        subjects, parser.get_parsed_content("roi_size"), parser.get_parsed_content("samples_per_subject")
    )
    return DataLoader(crops, batch_size=parser.get_parsed_content("batch_size"), shuffle=True, collate_fn=concatenate)


DATA_WRITERS = {
    "tissuemnist": lambda folder: write_synthetic_tissuemnist(
        folder / "tissuemnist.npz", n_train=1024, n_val=64, n_test=64
    ),
    "mrbrains18": lambda folder: write_synthetic_mrbrains18(folder, n_subjects=7, spacing=tuple(MRBRAINS18_SPACING)),
}


def batch_size(parser: ConfigParser) -> int:
    return parser.get_parsed_content("batch_size")


def crops_per_step(parser: ConfigParser) -> int:
    return parser.get_parsed_content("batch_size") * parser.get_parsed_content("samples_per_subject")


# Each fix as the overrides that revert it; together with the plain inferers they restore the old defaults.
FIXES: dict[str, dict[str, Any]] = {
    "checkpoint time bound": {"checkpoint_min_seconds": 0},
    "gradients set to None": {"train#trainer#optim_set_to_none": False},
    "loss kept on the device": {
        "train#trainer#decollate": True,
        "train#key_metric#loss#output_transform": "$monai.handlers.from_engine(['loss'], first=True)",
        "train#key_metric#loss#device": "$torch.device('cpu')",
    },
    "plain-tensor batches": {
        "train#transforms": "$list(@preprocessing.transforms) + [@train#crop_indices] + @augmentation"
    },
    "cached crop indices": {
        "train#transforms": "$list(@preprocessing.transforms) + @augmentation + [@train#plain_tensors]"
    },
    "cached subjects not copied": {"train#dataset#copy_cache": True},
}
CLASSIFIER_FIXES = ("checkpoint time bound", "gradients set to None", "loss kept on the device")
# The amp option's inferer wrapper is a pass-through when amp is off; "before" leaves it out too.
CLASSIFIER_BEFORE = {
    **{key: value for fix in CLASSIFIER_FIXES for key, value in FIXES[fix].items()},
    "train#inferer": "@inferer",
    "validate#inferer": "@inferer",
}
SEGMENTER_BEFORE = {
    **CLASSIFIER_BEFORE,
    **FIXES["cached subjects not copied"],
    "validate#inferer": "@sliding_window_inferer",
    "train#transforms": "$list(@preprocessing.transforms) + @augmentation",
}
TISSUEMNIST = {
    "bundle": "tissuemnist_resnet_classification",
    "data": "tissuemnist",
    "unit": "samples",
    "plain_loader": tissuemnist_loader,
    "samples_per_step": batch_size,
    "before": CLASSIFIER_BEFORE,
}
MRBRAINS18 = {
    "bundle": "mrbrains18_med3d_segmentation",
    "data": "mrbrains18",
    "unit": "volumes",
    "plain_loader": mrbrains18_loader,
    "samples_per_step": crops_per_step,
    "before": SEGMENTER_BEFORE,
}
MRBRAINS18_SIZE = {"pixdim": MRBRAINS18_SPACING, "roi_size": [48, 48, 24], "test_subjects": ["148"]}
WORKLOADS = {
    "tissuemnist": Workload(name="tissuemnist", overrides={"batch_size": 128}, **TISSUEMNIST),
    "mrbrains18": Workload(
        name="mrbrains18",
        overrides={"depth": 50, **MRBRAINS18_SIZE},
        ablate=("checkpoint time bound", "gradients set to None"),
        **MRBRAINS18,
    ),
    # The networks swapped for one layer: what is left is the cost of the engine, handlers and data pipeline.
    "tissuemnist_linear": Workload(
        name="tissuemnist_linear",
        overrides={
            "batch_size": 128,
            "network_def": "$torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8))",
        },
        ablate=CLASSIFIER_FIXES,
        rounds=4,
        epochs=4,
        **TISSUEMNIST,
    ),
    "mrbrains18_conv": Workload(
        name="mrbrains18_conv",
        overrides={"network_def": "$torch.nn.Conv3d(len(@modalities), @num_classes, 1)", **MRBRAINS18_SIZE},
        ablate=("loss kept on the device", "plain-tensor batches", "cached crop indices", "cached subjects not copied"),
        rounds=4,
        epochs=4,
        **MRBRAINS18,
    ),
}


def clock() -> tuple[float, float]:
    """Wall clock and this process's CPU time, in seconds."""
    return time.perf_counter(), time.process_time()


@dataclass
class Measurement:
    """One timed run: wall and CPU seconds and steps of the whole run and of its epochs after the first.

    The epochs after the first ("steady") are what a long run is made of; the whole run adds the first epoch's
    warm-up and the once-per-run work at its start and end (for the bundle: writing the model, its SHA-256 and
    record, the last metrics; for the plain loop: ``torch.save``).
    """

    seconds: float
    cpu_seconds: float
    steps: int
    steady_seconds: float | None
    steady_cpu_seconds: float | None
    steady_steps: int
    samples_per_step: int

    @classmethod
    def between(cls, marks: dict[str, tuple[float, float]], steps: int, steady_steps: int, samples_per_step: int):
        """From clock marks ``start``, ``end`` and, for runs of two epochs or more, ``steady_start``/``steady_end``."""
        steady = "steady_start" in marks
        return cls(
            seconds=marks["end"][0] - marks["start"][0],
            cpu_seconds=marks["end"][1] - marks["start"][1],
            steps=steps,
            steady_seconds=marks["steady_end"][0] - marks["steady_start"][0] if steady else None,
            steady_cpu_seconds=marks["steady_end"][1] - marks["steady_start"][1] if steady else None,
            steady_steps=steady_steps,
            samples_per_step=samples_per_step,
        )


def settings(workload: Workload, data_dir: Path, model_dir: Path, epochs: int) -> dict[str, Any]:
    return {
        "bundle_root": str(bundle_dir(workload.bundle)),
        "dataset_dir": str(data_dir),
        "model_dir": str(model_dir),
        "max_epochs": epochs,
        "val_interval": epochs + 1,
        "experiment_name": "framework-overhead",
        **workload.overrides,
    }


def train_parser(workload: Workload, overrides: dict[str, Any]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_files(bundle_dir(workload.bundle), "train"))
    parser.update(overrides)
    return parser


def run_bundle(workload: Workload, overrides: dict[str, Any], data_dir: Path, work: Path, epochs: int) -> Measurement:
    """Build the bundle's train workflow, initialize it, and time its trainer's ``run()``.

    Two clock handlers are attached after the bundle's own, so the steady window runs from the start of epoch 2
    to the end of the last epoch's handlers (checkpoint included), before the run's completion handlers.
    """
    root = bundle_dir(workload.bundle)
    marks: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(dir=work) as model_dir:
        workflow = ConfigWorkflow(
            config_file=config_files(root, "train"),
            meta_file=str(root / "configs" / "metadata.json"),
            logging_file=str(root / "configs" / "logging.conf"),
            workflow_type="train",
            **{**settings(workload, data_dir, Path(model_dir), epochs), **overrides},
        )
        workflow.initialize()
        trainer = workflow.parser.get_parsed_content("train#trainer")
        trainer.add_event_handler(Events.EPOCH_STARTED(once=2), lambda _: marks.update(steady_start=clock()))
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=epochs), lambda _: marks.update(steady_end=clock()))
        marks["start"] = clock()
        trainer.run()
        marks["end"] = clock()
        workflow.finalize()
        steps = trainer.state.iteration
        steady_steps = steps - trainer.state.epoch_length
        return Measurement.between(marks, steps, steady_steps, workload.samples_per_step(workflow.parser))


def run_plain(workload: Workload, data_dir: Path, work: Path, epochs: int) -> Measurement:
    """The same network, optimizer, LR schedule and loss from the bundle's config, trained by a bare loop."""
    parser = train_parser(workload, settings(workload, data_dir, work, epochs))
    set_determinism(seed=parser.get_parsed_content("seed"))
    loader = workload.plain_loader(parser)
    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("network")
    optimizer = parser.get_parsed_content("optimizer")
    scheduler = parser.get_parsed_content("lr_scheduler")
    loss_function = parser.get_parsed_content("loss")
    steps = 0
    marks = {"start": clock()}
    for epoch in range(epochs):
        if epoch == 1:
            marks["steady_start"] = clock()
        network.train()
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = loss_function(network(images), labels).mean()
            loss.backward()
            optimizer.step()
            steps += 1
        scheduler.step()
    if epochs > 1:
        marks["steady_end"] = clock()
    with tempfile.NamedTemporaryFile(dir=work, suffix=".pt") as model_file:
        torch.save(network.state_dict(), model_file.name)
        marks["end"] = clock()
    return Measurement.between(marks, steps, steps - len(loader), workload.samples_per_step(parser))


def alternate(runs: dict[str, Callable[[int], Measurement]], rounds: int, epochs: int, label: str) -> list[dict]:
    """Every run once per round, in an order rotated each round, after a one-epoch warm-up of the first two."""
    names = list(runs)
    results = []
    for index in range(rounds + 1):
        order = names[:2] if index == 0 else names[index % len(names) :] + names[: index % len(names)]
        outcome = {}
        for name in order:
            measured = runs[name](1 if index == 0 else epochs)
            outcome[name] = vars(measured)
            gc.collect()
            print(f"[{label}] round {index} {name}: {measured.seconds:.2f} s, {measured.cpu_seconds:.2f} CPU s")
        results.append(outcome)
    return results


def ratios(measured: list[dict], name: str, reference: str, seconds: str, steps: str) -> list[float]:
    """Per round: throughput of ``name`` over throughput of ``reference`` (same items per step)."""
    return [
        (result[name][steps] / result[name][seconds]) / (result[reference][steps] / result[reference][seconds])
        for result in measured
    ]


def summarize(rounds: list[dict], reference: str) -> dict[str, dict[str, Any]]:
    """Per run: median throughputs, and medians (with min and max) of its per-round ratios to ``reference``.

    ``ratio`` and ``cpu_ratio`` cover the epochs after the first; ``run_ratio`` and ``run_cpu_ratio`` whole runs.
    """
    measured = rounds[1:]
    seconds, cpu_seconds, steps = "steady_seconds", "steady_cpu_seconds", "steady_steps"
    summary = {}
    for name in measured[0]:
        runs = [result[name] for result in measured]
        wall = ratios(measured, name, reference, seconds, steps)
        extra_cpu_ms = [
            1000
            * (
                result[name][cpu_seconds] / result[name][steps]
                - result[reference][cpu_seconds] / result[reference][steps]
            )
            for result in measured
        ]
        summary[name] = {
            "throughput": statistics.median(run[steps] * run["samples_per_step"] / run[seconds] for run in runs),
            "cpu_throughput": statistics.median(
                run[steps] * run["samples_per_step"] / run[cpu_seconds] for run in runs
            ),
            "ratio": statistics.median(wall),
            "ratio_min": min(wall),
            "ratio_max": max(wall),
            "cpu_ratio": statistics.median(ratios(measured, name, reference, cpu_seconds, steps)),
            "run_ratio": statistics.median(ratios(measured, name, reference, "seconds", "steps")),
            "run_cpu_ratio": statistics.median(ratios(measured, name, reference, "cpu_seconds", "steps")),
            "extra_cpu_ms_per_step": statistics.median(extra_cpu_ms),
            "steps": runs[0][steps],
        }
    return summary


def measure(workload: Workload, work: Path, rounds: int, epochs: int) -> dict[str, Any]:
    data_dir = work / workload.data
    if not data_dir.exists():
        DATA_WRITERS[workload.data](data_dir)

    def bundle_run(overrides: dict[str, Any]) -> Callable[[int], Measurement]:
        return lambda epochs: run_bundle(workload, overrides, data_dir, work, epochs)

    runs = {"plain": lambda epochs: run_plain(workload, data_dir, work, epochs), "bundle": bundle_run({})}
    runs["before"] = bundle_run(workload.before)
    runs.update({f"without {fix}": bundle_run(FIXES[fix]) for fix in workload.ablate})
    training = alternate(runs, rounds, epochs, workload.name)
    return {
        "unit": workload.unit,
        "overrides": workload.overrides,
        "epochs": epochs,
        "rounds_measured": rounds,
        "arms": summarize(training, "plain"),
        "rounds": training,
    }


def fix_effects(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Steady ratio to plain of the shipped bundle minus that of the bundle with one fix reverted."""
    arms = result["arms"]
    return {
        name.removeprefix("without "): {
            "wall": arms["bundle"]["ratio"] - values["ratio"],
            "cpu": arms["bundle"]["cpu_ratio"] - values["cpu_ratio"],
        }
        for name, values in arms.items()
        if name.startswith("without ")
    }


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if "ratio" in key:
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


TRAINING_COLUMNS = (
    ("arm", "arm"),
    ("throughput", "items/s"),
    ("cpu_throughput", "items / CPU s"),
    ("ratio", "ours / plain"),
    ("ratio_min", "min"),
    ("ratio_max", "max"),
    ("cpu_ratio", "ours / plain, CPU time"),
    ("run_ratio", "whole run"),
    ("run_cpu_ratio", "whole run, CPU time"),
    ("extra_cpu_ms_per_step", "extra CPU ms / step"),
    ("steps", "steps"),
)
FIX_NOTES = {
    "checkpoint time bound": "`checkpoint_min_seconds` 120: an epoch end is checkpointed only 120 s or more after "
    "the previous checkpoint (was: every epoch; 90 MB for ResNet-18, 374 MB for Med3D ResNet-50)",
    "gradients set to None": "trainer `optim_set_to_none` true: backward writes fresh gradients instead of adding "
    "them to zeroed ones (MONAI's default is false; the weights come out bit-identical)",
    "loss kept on the device": "trainer `decollate` false and the loss average on `@device`: no per-item split of "
    "each batch and no `loss.item()` / device-to-host copy per step",
    "plain-tensor batches": "3D training batches as plain tensors (`EnsureTyped` with `track_meta` false after the "
    "crop): the network runs on `torch.Tensor`, not `MetaTensor`",
    "cached crop indices": "3D foreground/background voxel indices computed once per subject and cached "
    "(`FgBgToIndicesd`), not at every crop draw",
    "cached subjects not copied": "3D `CacheDataset` with `copy_cache` false: the random crop reads the cached "
    "subject instead of a deep copy of it (no transform writes into its input)",
}


def markdown(report: dict[str, Any]) -> str:
    headline = [
        {
            "workload": name,
            **{
                f"{arm}_{key}": result["arms"][arm][key]
                for arm in ("before", "bundle")
                for key in ("ratio", "cpu_ratio")
            },
        }
        for name, result in report["workloads"].items()
    ]
    sections = []
    for name, result in report["workloads"].items():
        rows = [{"arm": arm, **values} for arm, values in result["arms"].items()]
        text = (
            f"## {name} ({result['unit']})\n\nBundle overrides: `{result['overrides']}`; {result['epochs']} epochs per "
            f"arm, {result['rounds_measured']} measured rounds.\n\n" + markdown_table(rows, TRAINING_COLUMNS, cell)
        )
        if result["fix_effects"]:
            text += "\n\nSteady ratio gained by each fix (shipped minus that fix reverted), wall / CPU time: " + (
                ", ".join(
                    f"{fix} {gain['wall']:+.3f} / {gain['cpu']:+.3f}" for fix, gain in result["fix_effects"].items()
                )
            )
        sections.append(text)
    fixes = "\n".join(f"- {name}: {note}" for name, note in FIX_NOTES.items())
    return (
        "# Framework overhead: the bundle's trainer versus a plain PyTorch loop\n\n"
        f"Machine: {report['machine']}; load average {report['load_average'][0]:.1f} at the start and "
        f"{report['load_average'][1]:.1f} at the end (a shared machine: other jobs can slow any arm down; the "
        "CPU-time columns divide by this process's CPU seconds, which other processes disturb less). "
        f"Whole script: {report['seconds']:.0f} s.\n\n"
        "Arms run alternately in one process, in a rotated order, after a one-epoch warm-up of `plain` and `bundle`. "
        "`ours / plain` is the median of per-round ratios of items/s over the epochs after the first (a long run's "
        "steady state, epoch-end handlers and checkpoints included); `whole run` adds the first epoch and the "
        "once-per-run work (the bundle writes the model, its SHA-256 and record; the plain loop one `torch.save`). "
        "Validation is pushed past the last epoch (it is not part of a training step). `before` is the bundle with "
        "the defaults it had before these fixes; `without <fix>` the shipped bundle with that fix reverted:\n\n"
        f"{fixes}\n\n"
        "Steady ratio ours / plain, before and after the fixes:\n\n"
        + markdown_table(headline, HEADLINE_COLUMNS, cell)
        + "\n\n"
        + "\n\n".join(sections)
        + "\n"
    )


HEADLINE_COLUMNS = (
    ("workload", "workload"),
    ("before_ratio", "before"),
    ("bundle_ratio", "after"),
    ("before_cpu_ratio", "before, CPU time"),
    ("bundle_cpu_ratio", "after, CPU time"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (default: the workload's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per arm and round (default: the workload's)")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--output_dir", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--results_name", default="framework_overhead")
    add_results_dir(parser)
    options = parser.parse_args()
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(options.output_dir or scratch).absolute()
        work.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        os.environ.setdefault("MEDUNLEARN_SALT", "framework-overhead")
        results = {
            name: measure(
                WORKLOADS[name],
                work,
                options.rounds or WORKLOADS[name].rounds,
                options.epochs or WORKLOADS[name].epochs,
            )
            for name in options.workloads
        }
    for result in results.values():
        result["fix_effects"] = fix_effects(result)
    report = {
        "machine": machine(),
        "load_average": [load_at_start, os.getloadavg()[0]],
        "seconds": time.perf_counter() - started,
        "workloads": results,
    }
    write_results(options.results_dir, options.results_name, report, markdown(report))


if __name__ == "__main__":
    main()
