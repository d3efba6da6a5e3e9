"""GPU training-step speed of the bundles' networks: float32 versus bfloat16 autocast, and channels-last for 2D.

Each case builds the network, loss and optimizer from a bundle's own config (``common.json`` + ``train.json``)
and trains on random tensors of the bundle's batch shape already on the GPU, so the numbers are the step alone
(the data pipeline and the engine's handlers are measured by ``framework_overhead.py``). A step is what the
bundle's trainer does: ``zero_grad(set_to_none=True)``, the forward pass through the bundle's
``AutocastInferer`` (``amp`` true: bfloat16 autocast, float32 predictions), the loss, backward, ``SGD.step``.
``monai.utils.set_determinism`` is called first, as every bundle workflow does (cuDNN deterministic, no
autotuning), so these are the speeds a bundle run gets.

Cases: the TissueMNIST ResNet-18 (28 x 28, batch 128), the CheXpert ResNet-18 (224 x 224, batch 32), the
MRBrainS18 Med3D ResNet-50 on its training crop (96 x 96 x 32, 2 subjects x 2 crops) and on MedicalNet's
56 x 448 x 448 crop (D x H x W; 448 x 448 x 56 in the bundle's x, y, z order, 1 volume). 2D cases also run
with channels-last weights (``channels_last`` true). Peak memory is ``torch.cuda.max_memory_allocated``.
Writes benchmarks/results/gpu.json and .md. Without CUDA it prints why and measures nothing, unless ``--cpu``
asks for the same measurement on the CPU (``cpu_precision.json``/``.md``; bfloat16 pays off on CPUs with
AVX-512 BF16 or AMX).

    python benchmarks/gpu.py [--steps 20] [--warmup 5] [--cases tissuemnist chexpert mrbrains18 medicalnet]
    python benchmarks/gpu.py --cpu --cases tissuemnist mrbrains18 --steps 3 --warmup 1   # the same on the CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from _report import add_results_dir, machine, markdown_table, write_results
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer
from monai.utils import set_determinism

from medunlearn_monai.precision import AutocastInferer
from medunlearn_monai.workflows import bundle_dir, config_files


@dataclass(frozen=True)
class Case:
    """One bundle network at one batch shape, with labels of the kind its loss takes."""

    name: str
    bundle: str
    overrides: dict[str, Any]
    input_shape: tuple[int, ...]
    labels: Callable[[tuple[int, ...], torch.device], torch.Tensor]
    unit: str
    channels_last: bool  # also measured with channels-last weights (2D networks)


def class_indices(classes: int) -> Callable[[tuple[int, ...], torch.device], torch.Tensor]:
    return lambda shape, device: torch.randint(0, classes, (shape[0],), device=device)


def multi_label(classes: int) -> Callable[[tuple[int, ...], torch.device], torch.Tensor]:
    return lambda shape, device: torch.randint(0, 2, (shape[0], classes), device=device).float()


def label_map(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.randint(0, 2, (shape[0], 1, *shape[2:]), device=device, dtype=torch.uint8)


CASES = {
    "tissuemnist": Case(
        "tissuemnist ResNet-18 28x28",
        "tissuemnist_resnet_classification",
        {},
        (128, 1, 28, 28),
        class_indices(8),
        "images",
        True,
    ),
    "chexpert": Case(
        "chexpert ResNet-18 224x224",
        "chexpert_resnet_classification",
        {},
        (32, 1, 224, 224),
        multi_label(5),
        "images",
        True,
    ),
    "mrbrains18": Case(
        "mrbrains18 Med3D-50 96x96x32 crops",
        "mrbrains18_med3d_segmentation",
        {"depth": 50},
        (4, 3, 96, 96, 32),
        label_map,
        "volumes",
        False,
    ),
    "medicalnet": Case(
        "Med3D-50 MedicalNet 56x448x448",
        "mrbrains18_med3d_segmentation",
        {"depth": 50},
        (1, 3, 448, 448, 56),
        label_map,
        "volumes",
        False,
    ),
}


def build(case: Case, device: torch.device, channels_last: bool) -> tuple[torch.nn.Module, Any, Any]:
    """The bundle's network (on ``device``), SGD optimizer and loss, parsed from its train config."""
    parser = ConfigParser()
    parser.read_config(config_files(bundle_dir(case.bundle), "train"))
    parser.update({"bundle_root": str(bundle_dir(case.bundle)), "device": f"$torch.device('{device}')"})
    parser.update(case.overrides)
    if channels_last:
        parser["channels_last"] = True
    return (
        parser.get_parsed_content("network"),
        parser.get_parsed_content("optimizer"),
        parser.get_parsed_content("loss"),
    )


def train_step(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_function: Callable[..., torch.Tensor],
    inferer: AutocastInferer,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """One step as the bundles' ``SupervisedTrainer`` takes it (``optim_set_to_none`` true, mean of the loss)."""
    network.train()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_function(inferer(images, network), labels).mean()
    loss.backward()
    optimizer.step()
    return loss


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(
    case: Case, amp: bool, channels_last: bool, device: torch.device, steps: int, warmup: int
) -> dict[str, Any]:
    """Time ``steps`` training steps after ``warmup`` ones; items/s, ms/step and peak memory (CUDA only)."""
    set_determinism(seed=0)
    network, optimizer, loss_function = build(case, device, channels_last)
    inferer = AutocastInferer(SimpleInferer(), enabled=amp, device=device)
    images = torch.randn(case.input_shape, device=device)
    labels = case.labels(case.input_shape, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        train_step(network, optimizer, loss_function, inferer, images, labels)
    synchronize(device)
    durations = []
    for _ in range(steps):
        started = time.perf_counter()
        loss = train_step(network, optimizer, loss_function, inferer, images, labels)
        synchronize(device)
        durations.append(time.perf_counter() - started)
    step_seconds = statistics.median(durations)
    return {
        "case": case.name,
        "precision": "bf16 autocast" if amp else "fp32",
        "channels_last": channels_last,
        "batch": case.input_shape[0],
        "unit": case.unit,
        "items_per_second": case.input_shape[0] / step_seconds,
        "ms_per_step": 1000 * step_seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "loss": loss.detach().item(),
    }


def variants(case: Case) -> list[tuple[bool, bool]]:
    """(amp, channels_last) pairs: both precisions, and channels-last for 2D networks."""
    layouts = (False, True) if case.channels_last else (False,)
    return [(amp, layout) for layout in layouts for amp in (False, True)]


def measure(names: list[str], device: torch.device, steps: int, warmup: int) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        case = CASES[name]
        baseline = None
        for amp, channels_last in variants(case):
            try:
                row = run_case(case, amp, channels_last, device, steps, warmup)
            except torch.OutOfMemoryError as error:
                row = {"case": case.name, "precision": "bf16 autocast" if amp else "fp32"}
                row |= {"channels_last": channels_last, "error": f"out of memory: {str(error).splitlines()[0]}"}
                torch.cuda.empty_cache()
            baseline = baseline or row.get("items_per_second")
            if baseline and "items_per_second" in row:
                row["speedup_vs_fp32"] = row["items_per_second"] / baseline
            rows.append(row)
            print(row, flush=True)
    return rows


COLUMNS = (
    ("case", "case"),
    ("precision", "precision"),
    ("channels_last", "channels-last"),
    ("batch", "batch"),
    ("items_per_second", "items/s"),
    ("ms_per_step", "ms / step"),
    ("speedup_vs_fp32", "vs fp32"),
    ("peak_memory_gib", "peak GPU memory (GiB)"),
    ("error", "error"),
)


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "speedup_vs_fp32":
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return str(value)


def settings(device: torch.device) -> dict[str, Any]:
    """The numerics settings the steps ran under (set by ``set_determinism``, as in the bundles)."""
    return {
        "device": str(device),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def markdown(report: dict[str, Any]) -> str:
    on_cpu = report["settings"]["device"] == "cpu"
    return (
        f"# {'CPU' if on_cpu else 'GPU'} training step: float32 versus bfloat16 autocast\n\n"
        f"Machine: {report['machine']}\n\nSettings: `{report['settings']}`; median of {report['steps']} steps after "
        f"{report['warmup']} warm-up steps, random tensors already on the device (the data pipeline is not timed)."
        "\n\n" + markdown_table(report["rows"], COLUMNS, cell) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--cpu", action="store_true", help="measure on the CPU instead (results: cpu_precision)")
    parser.add_argument("--results_name", default=None, help="default: gpu, or cpu_precision with --cpu")
    add_results_dir(parser)
    options = parser.parse_args(argv)
    if not options.cpu and not torch.cuda.is_available():
        print(
            f"benchmarks/gpu.py: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
            "nothing measured and no results written. Run it on a machine with an NVIDIA GPU and a CUDA build of "
            "torch (docker/Dockerfile.cuda), or pass --cpu to measure the CPU."
        )
        return 0
    device = torch.device("cpu" if options.cpu else "cuda:0")
    rows = measure(options.cases, device, options.steps, options.warmup)
    report = {
        "machine": machine(),
        "settings": settings(device),
        "steps": options.steps,
        "warmup": options.warmup,
        "rows": rows,
    }
    name = options.results_name or ("cpu_precision" if options.cpu else "gpu")
    write_results(options.results_dir, name, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
