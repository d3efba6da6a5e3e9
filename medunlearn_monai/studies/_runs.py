"""What the studies share: a parent MLflow run, its child workflows, and the evaluated models' per-item scores."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medunlearn_monai import workflows
from medunlearn_monai.records import read_item_scores
from medunlearn_monai.tracking import MLflowTracker

# Overrides that choose the forget request; a study that sets its own request drops them.
REQUEST_KEYS = ("forget_request_file", "forget_fraction", "forget_where")


class StudyError(ValueError):
    """A study cannot run with the models or arguments given."""


@contextmanager
def study_run(bundle: str, workflow: str, overrides: Mapping[str, Any], params: Mapping[str, Any]) -> Iterator[Any]:
    """Open the study's parent MLflow run (in the bundle's experiment unless overridden); ends FAILED on error."""
    experiment = overrides.get("experiment_name") or workflows.config_value(bundle, "experiment_name")
    tracker = MLflowTracker(experiment, workflow, params={"workflow": workflow, "bundle": bundle, **params})
    tracker.start()
    try:
        yield tracker
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()


class ChildWorkflows:
    """Run workflows of one bundle as child runs of a study, printing one progress line per workflow."""

    def __init__(self, bundle: str, parent: MLflowTracker, overrides: Mapping[str, Any], steps: int):
        self.bundle = bundle
        self.overrides = {**overrides, **workflows.child_run_overrides(parent.run_id)}
        self.steps = steps
        self.done = 0

    def run(self, title: str, workflow: str, strategy: str | None = None, **overrides: Any) -> None:
        """Run one workflow with the study's overrides plus ``overrides``."""
        self.done += 1
        print(f"[{self.done}/{self.steps}] {title}", flush=True)
        started = time.perf_counter()
        workflows.run_workflow(self.bundle, workflow, strategy, **{**self.overrides, **overrides})
        print(f"      {time.perf_counter() - started:.1f} s", flush=True)

    def skip(self, title: str) -> None:
        """Count a workflow that an earlier run of the study finished, and say so."""
        self.done += 1
        print(f"[{self.done}/{self.steps}] {title}: finished earlier, skipped", flush=True)


def split_scores(model: Path, split: str, expected_subjects: Sequence[str] | None = None) -> dict[str, list]:
    """One split of a model's per-item scores (``<model>.items.json``), checked to list ``expected_subjects``.

    Raises:
        StudyError: when the model was not evaluated, or its items differ from the expected ones.
    """
    try:
        scores = read_item_scores(model)["splits"][split]
    except FileNotFoundError as error:
        raise StudyError(f"{model} has no per-item scores: run the evaluate workflow on it first.") from error
    except KeyError as error:
        raise StudyError(
            f"the evaluation of {model} has no {split} split: evaluate it with the forget request."
        ) from error
    if expected_subjects is not None and list(scores["subject_sha256"]) != list(expected_subjects):
        raise StudyError(
            f"the {split} items of {model} differ from the reference model's: evaluate all models with the same "
            "data and forget request."
        )
    return scores
