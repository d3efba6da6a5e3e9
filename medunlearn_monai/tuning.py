"""``medunlearn tune``: search a strategy's hyperparameters with Optuna, and put the search on the bill.

Every trial runs the bundle's ``unlearn`` workflow into its own model file and ``evaluate`` on it,
both as MLflow child runs of one ``tune`` run. Tuning is part of what an approximate method costs:
a method that needs eight tries to land near exact retraining spent eight unlearning runs, so
``speedup_vs_retrain_incl_tuning`` divides the retraining time by the whole search plus one run of
the chosen configuration.

The objective (lower is better) is ``gap_to_retrain`` when the retrained model of the same forget
request exists and was evaluated; otherwise :func:`forget_retain_tradeoff`.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from monai.bundle import ConfigParser

from medunlearn_monai import tracking, workflows
from medunlearn_monai.metrics.evaluation import REQUEST_KEY
from medunlearn_monai.model_io import (
    evaluation_path,
    item_scores_path,
    read_json,
    read_record,
    record_path,
    write_atomically,
    write_json,
)
from medunlearn_monai.search_space import SearchSpace, build_search_space

GAP_OBJECTIVE = "gap_to_retrain"
TRADEOFF_OBJECTIVE = "forget_retain_tradeoff"
# Keys every trial sets itself; a user value would send all trials to one file or hide the reference.
SET_BY_TUNING = ("output_model", "model_path", "reference_model", "tracker#tags")
# monai.bundle.run drops overrides whose value is None; this expression evaluates to None in the config.
NO_REFERENCE = "$None"


class TuningError(ValueError):
    """A tuning run that cannot start or score its trials with the arguments and models given."""


@dataclass(frozen=True)
class StrategyConfig:
    """What tuning reads from a strategy's unlearn config (with the user's overrides applied).

    Attributes:
        hyperparameters: declared hyperparameter name -> the config key it reads (``@learning_rate``).
        defaults: the strategy's values of those keys that are plain numbers.
        model_dir, original_model, retrained_model: where the bundle keeps its models.
        experiment_name: the MLflow experiment of the bundle's runs.
    """

    hyperparameters: dict[str, str]
    defaults: dict[str, Any]
    model_dir: Path
    original_model: Path
    retrained_model: Path
    experiment_name: str


@dataclass(frozen=True)
class TrialResult:
    """One finished trial: its values, objective, cost and model file."""

    number: int
    params: dict[str, Any]
    objective: float
    gap_to_retrain: float | None
    unlearn_seconds: float
    seconds: float
    model: Path


@dataclass(frozen=True)
class TuningResult:
    """A finished search: every trial, the best one, the copied model and the parent run's final metrics."""

    strategy: str
    objective: str
    trials: list[TrialResult]
    best: TrialResult
    tuned_model: Path
    metrics: dict[str, float]
    run_id: str


def read_strategy_config(bundle: str, strategy: str, overrides: Mapping[str, Any]) -> StrategyConfig:
    """Parse the strategy's unlearn config list as ``run_workflow`` would, without running anything.

    Raises:
        ValueError: for an unknown bundle or strategy.
    """
    root = workflows.bundle_dir(bundle)
    parser = ConfigParser()
    parser.read_config(workflows.config_files(root, "unlearn", strategy))
    parser.update({"bundle_root": str(root), **overrides})
    references = {
        name: match.group(1)
        for name, value in (parser.get("hyperparameters") or {}).items()
        if isinstance(value, str) and (match := re.fullmatch(r"@([\w#]+)", value))
    }
    defaults = {
        name: parser.get(key)
        for name, key in references.items()
        if isinstance(parser.get(key), (int, float)) and not isinstance(parser.get(key), bool)
    }
    return StrategyConfig(
        hyperparameters=references,
        defaults=defaults,
        model_dir=Path(parser.get_parsed_content("model_dir")),
        original_model=Path(parser.get_parsed_content("original_model")),
        retrained_model=Path(parser.get_parsed_content("retrained_model")),
        experiment_name=str(parser.get_parsed_content("experiment_name")),
    )


def forget_retain_tradeoff(evaluation: Mapping[str, float], original: Mapping[str, float]) -> float:
    """The objective when no retrained reference exists, in points (lower is better).

    ``|forget - test| + max(0, original retain - retain)`` on accuracy, or on Dice for segmentation:
    exact retraining leaves the forget data looking like unseen test data, and must not cost the
    retained data any quality. Both terms are measurable without retraining.

    Raises:
        TuningError: when a split's metric is missing from either evaluation.
    """
    metric = "acc" if "retain_acc" in evaluation else "dice"
    forget, test, retain = (f"{split}_{metric}" for split in ("forget", "test", "retain"))
    missing = [key for key in (forget, test, retain) if key not in evaluation] + (
        [] if retain in original else [f"original {retain}"]
    )
    if missing:
        raise TuningError(f"the forget/retain trade-off needs {', '.join(missing)}; evaluate with the forget request.")
    return 100.0 * (abs(evaluation[forget] - evaluation[test]) + max(0.0, original[retain] - evaluation[retain]))


def tune(
    bundle: str,
    strategy: str,
    n_trials: int = 8,
    seed: int = 0,
    search: Mapping[str, Any] | str | None = None,
    **overrides: Any,
) -> TuningResult:
    """Search ``strategy``'s hyperparameters for ``n_trials`` trials and copy the best model.

    The first trial tries the strategy's own values where they lie inside the search space, so the
    search starts from the shipped configuration. ``seed`` seeds the TPE sampler and is the
    bundle's ``seed`` in every trial (the same data order and request, so trials differ only in
    their hyperparameters). The best model goes to ``<model_dir>/unlearned_<strategy>_tuned.pt``
    beside its record (strategy ``<strategy>_tuned``) and evaluation.

    Args:
        bundle: a bundle name or folder.
        strategy: one of the bundle's strategies.
        n_trials: how many unlearn + evaluate trials to run.
        seed: sampler and bundle seed.
        search: narrowed ranges or fixed values by hyperparameter name (see ``build_search_space``).
        **overrides: bundle overrides as for ``medunlearn run`` (dataset_dir, model_dir, forget request, ...).

    Raises:
        TuningError: for a bad ``n_trials``, an override tuning sets itself, or no original model.
        ValueError: for an unknown strategy or search space (before any run is created).
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise TuningError(f"--n_trials must be a positive integer, got {n_trials!r}.")
    clashes = [key for key in SET_BY_TUNING if key in overrides]
    if clashes:
        raise TuningError(f"tune sets {', '.join(clashes)} itself for every trial; remove them from the command.")
    overrides = {**overrides, "seed": seed}
    config = read_strategy_config(bundle, strategy, overrides)
    held = [name for name, key in config.hyperparameters.items() if key in overrides]
    space = build_search_space(config.hyperparameters, search, held, f"strategy {strategy!r}")
    if not config.original_model.is_file():
        raise TuningError(f"original model {config.original_model} does not exist: run the train workflow first.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one progress line per trial is printed instead
    # TPE's default 10 random start-up trials would leave a budget of 8 a purely random search.
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n_trials // 2)))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    defaults = {
        name: value
        for name, value in config.defaults.items()
        if name in space.distributions and space.contains(name, value)
    }
    if defaults:
        study.enqueue_trial(defaults)
    params = {
        "workflow": "tune",
        "bundle": bundle,
        "strategy": strategy,
        "n_trials": n_trials,
        "seed": seed,
        "sampler": "TPESampler",
        "search_space": space.describe(),
    }
    tracker = tracking.MLflowTracker(config.experiment_name, f"tune-{strategy}", params=params)
    tracker.start()
    try:
        result = _Search(bundle, strategy, config, space, overrides, tracker).run(study, n_trials)
    except BaseException:
        tracking.fail_open_runs()  # the parent and the trial run that raised end FAILED
        raise
    tracker.end()
    return result


class _Search:
    """The trials of one tune call, their reference models and the parent run's bookkeeping."""

    def __init__(
        self,
        bundle: str,
        strategy: str,
        config: StrategyConfig,
        space: SearchSpace,
        overrides: Mapping[str, Any],
        tracker: tracking.MLflowTracker,
    ):
        self.bundle = bundle
        self.strategy = strategy
        self.config = config
        self.space = space
        self.overrides = dict(overrides)
        self.tracker = tracker
        self.trials_dir = config.model_dir / "tuning" / strategy
        self.request: str | None = None
        self.reference: Path | None = None
        self.original_evaluation: dict[str, Any] | None = None

    def run(self, study: optuna.Study, n_trials: int) -> TuningResult:
        """Run the trials, log the outcome to the parent run and copy the best model."""
        started = time.perf_counter()
        trials = []
        for _ in range(n_trials):
            trial = study.ask(self.space.distributions)
            try:
                values = {**self.space.fixed, **trial.params}
                ordered = {name: values[name] for name in self.config.hyperparameters if name in values}
                result = self._run_trial(trial.number + 1, ordered)
            except BaseException:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            study.tell(trial, result.objective)
            trials.append(result)
            self.tracker.log_metrics(
                {"trial_objective": result.objective, "trial_seconds": result.seconds}, step=result.number
            )
            print(
                f"trial {result.number}/{n_trials}: {self.objective} {result.objective:.2f} in {result.seconds:.1f} s "
                f"({_format_params(result.params)})",
                flush=True,
            )
        tuning_seconds = time.perf_counter() - started
        best = trials[study.best_trial.number]
        metrics = {"tuning_seconds": tuning_seconds, "best_objective": best.objective}
        if best.gap_to_retrain is not None:
            metrics["best_gap_to_retrain"] = best.gap_to_retrain
        retrain_seconds = self._retrain_seconds()
        if retrain_seconds is not None:
            metrics["speedup_vs_retrain_incl_tuning"] = retrain_seconds / (tuning_seconds + best.unlearn_seconds)
        self.tracker.log_metrics(metrics)
        self.tracker.log_params({f"best_{name}": value for name, value in best.params.items()})
        self.tracker.log_params({"objective": self.objective, REQUEST_KEY: self.request, "best_trial": best.number})
        table = self.trials_dir / "tuning_trials.json"
        write_json(table, {"objective": self.objective, "best_trial": best.number, "trials": [_row(t) for t in trials]})
        self.tracker.log_artifact(table, "tables")
        tuned = self._copy_best(best, tuning_seconds)
        return TuningResult(self.strategy, self.objective, trials, best, tuned, metrics, self.tracker.run_id)

    @property
    def objective(self) -> str:
        return GAP_OBJECTIVE if self.reference else TRADEOFF_OBJECTIVE

    def _run_trial(self, number: int, params: Mapping[str, Any]) -> TrialResult:
        model = self.trials_dir / f"trial_{number}.pt"
        child = workflows.child_run_overrides(self.tracker.run_id, tuning_trial=str(number))
        values = {self.config.hyperparameters[name]: value for name, value in params.items()}
        started = time.perf_counter()
        self._workflow("unlearn", self.strategy, **values, **child, output_model=str(model))
        record = read_record(model)
        if self.request is None:
            self._choose_references(record[REQUEST_KEY])
        reference = str(self.reference) if self.reference else NO_REFERENCE
        self._workflow("evaluate", **child, model_path=str(model), reference_model=reference)
        evaluation = read_json(evaluation_path(model))
        gap = evaluation.get(GAP_OBJECTIVE)
        if self.reference is None:
            objective = forget_retain_tradeoff(evaluation, self._original_evaluation())
        elif gap is None:
            raise TuningError(f"the evaluation of {model} has no {GAP_OBJECTIVE} against {self.reference}.")
        else:
            objective = gap
        return TrialResult(
            number=number,
            params=dict(params),
            objective=float(objective),
            gap_to_retrain=gap,
            unlearn_seconds=float(record["seconds"]),
            seconds=time.perf_counter() - started,
            model=model,
        )

    def _workflow(self, workflow: str, strategy: str | None = None, **overrides: Any) -> None:
        workflows.run_workflow(self.bundle, workflow, strategy, **{**self.overrides, **overrides})

    def _choose_references(self, request: str) -> None:
        self.request = request
        retrained = self.config.retrained_model
        self.reference = retrained_reference(retrained, request)
        if self.reference is None:
            print(
                f"No evaluated retrained model for this forget request at {retrained}: "
                f"tuning minimises the {TRADEOFF_OBJECTIVE} instead of the {GAP_OBJECTIVE}.",
                flush=True,
            )

    def _original_evaluation(self) -> dict[str, Any]:
        """The original model's evaluation for this request; evaluated once (a child run) when missing."""
        if self.original_evaluation is None:
            original = self.config.original_model
            if _request_of(evaluation_path(original)) != self.request:
                child = workflows.child_run_overrides(self.tracker.run_id, tuning_trial="original")
                self._workflow("evaluate", **child, model_path=str(original), reference_model=NO_REFERENCE)
            self.original_evaluation = read_json(evaluation_path(original))
        return self.original_evaluation

    def _retrain_seconds(self) -> float | None:
        """The retrained model's training time, when it was retrained for this request."""
        path = record_path(self.config.retrained_model)
        if _request_of(path) != self.request:
            return None
        return float(read_json(path)["seconds"])

    def _copy_best(self, best: TrialResult, tuning_seconds: float) -> Path:
        """Copy the best trial's model, evaluation and per-item scores to ``unlearned_<strategy>_tuned``."""
        tuned = self.config.model_dir / f"unlearned_{self.strategy}_tuned.pt"
        for source, target in (
            (best.model, tuned),
            (evaluation_path(best.model), evaluation_path(tuned)),
            (item_scores_path(best.model), item_scores_path(tuned)),
        ):
            if source.is_file():
                write_atomically(target, lambda temporary, source=source: shutil.copyfile(source, temporary))
            else:
                target.unlink(missing_ok=True)  # a stale file from an earlier search would describe another model
        record = {
            **read_record(best.model),
            "strategy": f"{self.strategy}_tuned",
            "tuning": {
                "run_id": self.tracker.run_id,
                "trial": best.number,
                "objective": self.objective,
                "value": best.objective,
                "hyperparameters": best.params,
                "tuning_seconds": tuning_seconds,
            },
        }
        write_json(record_path(tuned), record)
        return tuned


def retrained_reference(retrained_model: Path, request_sha256: str) -> Path | None:
    """``retrained_model`` when it was retrained and evaluated for this very request, else None.

    Another request's retrained model is no reference: its gap would measure the wrong forgetting.
    """
    record, evaluation = _request_of(record_path(retrained_model)), _request_of(evaluation_path(retrained_model))
    return retrained_model if record == evaluation == request_sha256 else None


def _request_of(path: Path) -> str | None:
    return read_json(path).get(REQUEST_KEY) if path.is_file() else None


def _row(trial: TrialResult) -> dict[str, Any]:
    return {
        "trial": trial.number,
        "objective": trial.objective,
        "gap_to_retrain": trial.gap_to_retrain,
        "unlearn_seconds": trial.unlearn_seconds,
        "seconds": trial.seconds,
        "hyperparameters": trial.params,
        "model": trial.model.name,
    }


def _format_params(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items()
    )


def summary(result: TuningResult) -> str:
    """A text table of the trials (objective, seconds, hyperparameters; the best marked ``*``) and the outcome."""
    names = list(result.best.params)
    header = ["trial", result.objective, "seconds", *names]
    rows = [
        [
            f"{trial.number}{' *' if trial is result.best else ''}",
            f"{trial.objective:.2f}",
            f"{trial.seconds:.1f}",
            *(
                f"{trial.params[name]:.4g}" if isinstance(trial.params[name], float) else str(trial.params[name])
                for name in names
            ),
        ]
        for trial in result.trials
    ]
    widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(text.rjust(width) for text, width in zip(line, widths, strict=True)) for line in [header, *rows]]
    speedup = result.metrics.get("speedup_vs_retrain_incl_tuning")
    cost = f"tuning took {result.metrics['tuning_seconds']:.1f} s" + (
        f"; speedup vs retraining, tuning included: {speedup:.2f}x" if speedup is not None else ""
    )
    return "\n".join(
        [
            lines[0],
            "-" * len(lines[0]),
            *lines[1:],
            "",
            f"best: trial {result.best.number}, {result.objective} {result.best.objective:.2f} -> {result.tuned_model}",
            f"{cost} (MLflow run {result.run_id})",
        ]
    )
