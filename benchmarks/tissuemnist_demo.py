"""Wall time of every method and of the whole demo on this machine, with the comparison table.

Writes benchmarks/results/tissuemnist_demo.json and .md. Targets (issue 2): whole demo under 5
minutes on 2 CPU cores; RL and SalUn each at least 5x faster than exact retraining with an Avg. Gap
under 5 points.

    python benchmarks/tissuemnist_demo.py [--output_dir /tmp/medunlearn-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from _report import machine

from medunlearn_monai.comparison import format_table
from medunlearn_monai.demo import run_demo

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default=None, help="work folder (default: a temporary one)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(arguments.output_dir or scratch)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        result = run_demo(work, experiment="benchmark-tissuemnist")
    rows = {row["method"]: row for row in result.rows}
    targets = {
        "demo_under_300_seconds": result.total_seconds < 300,
        **{f"{name}_speedup_at_least_5x": (rows[name]["speedup_vs_retrain"] or 0) >= 5 for name in ("rl", "salun")},
        **{f"{name}_gap_under_5_points": (rows[name]["gap_to_retrain"] or 99) < 5 for name in ("rl", "salun")},
    }
    report = {
        "machine": machine(),
        "demo_seconds": result.total_seconds,
        "step_seconds": result.step_seconds,
        "methods": result.rows,
        "targets_met": targets,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tissuemnist_demo.json").write_text(json.dumps(report, indent=2))
    steps = "\n".join(f"| {title} | {seconds:.1f} |" for title, seconds in result.step_seconds.items())
    met = "\n".join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in targets.items())
    (RESULTS / "tissuemnist_demo.md").write_text(
        f"# TissueMNIST demo benchmark\n\nMachine: {report['machine']}\n\n"
        f"Whole demo: {result.total_seconds:.1f} s\n\n```\n{format_table(result.rows)}\n```\n\n"
        f"| step | seconds |\n|---|---|\n{steps}\n\nTargets:\n{met}\n"
    )
    print((RESULTS / "tissuemnist_demo.md").read_text())


if __name__ == "__main__":
    main()
