"""What every benchmark report shares: the machine it ran on, its markdown table and where it is written."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """The GPU, or the CPU with its cores and torch threads, and the torch version."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    processor = platform.processor() or platform.machine()
    return f"{processor}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), no GPU"


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], cell: Callable[[str, Any], str]
) -> str:
    """A markdown table of ``rows`` with ``(key, title)`` columns, each value formatted by ``cell(key, value)``."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(key, row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def plus_minus(mean: float | None, std: float | None = None, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` scaled and rounded (``-`` for a missing mean, the mean alone without a std)."""
    if mean is None:
        return "-"
    return f"{scale * mean:.{digits}f}" + ("" if std is None else f" ± {scale * std:.{digits}f}")


def add_results_dir(parser: argparse.ArgumentParser) -> None:
    """The ``--results_dir`` option: where the report goes (default benchmarks/results; smoke runs use another)."""
    parser.add_argument("--results_dir", type=Path, default=RESULTS, help=f"where reports go (default {RESULTS})")


def write_results(results_dir: Path, name: str, report: Mapping[str, Any], markdown: str) -> None:
    """Write ``<name>.json`` and ``<name>.md`` into ``results_dir`` and print the markdown."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    (results_dir / f"{name}.md").write_text(markdown)
    print(markdown)
