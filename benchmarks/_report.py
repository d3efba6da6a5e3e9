"""What every benchmark report shares: the machine it ran on and its markdown table."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


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
