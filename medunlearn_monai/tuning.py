"""``medunlearn tune``: search a strategy's hyperparameters with Optuna, never reading the test split.

Every trial runs the bundle's ``unlearn`` workflow into its own model file and ``evaluate`` on it,
both as MLflow child runs of one ``tune`` run. Trials are scored on the **validation split**, which
stands in for the test split (``test_items`` is overridden by ``val_items``): the test split is never
loaded while values are chosen, so the reported test quality of the chosen values is not flattered.

Two modes:

* ``per_request``: tune on the very request to be served (the user's forget request and its
  retrained model). The whole search is charged to that request:
  ``speedup_vs_retrain_incl_tuning`` = retraining seconds / (search + one run of the best values).
* ``per_bundle``: tune once on a *tuning request*, a random forget set of ``forget_fraction`` drawn
  with its own ``tuning_seed``, with its own exact retraining as the reference. The chosen values
  then apply unchanged to every later request; the search (its reference retraining included) is
  amortised over ``amortise_over`` requests, a number the results state. The outcome is a
  ``provenance`` record that a strategy config can carry.

The objective (lower is better) is the validation Avg. Gap to the retrained reference
(``val_gap_to_retrain``) when that reference exists; otherwise :func:`forget_retain_tradeoff`
on validation data (``val_forget_retain_tradeoff``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from monai.bundle import ConfigParser

from medunlearn_monai import tracking, workflows
from medunlearn_monai.certificate.issue import certify_copy
from medunlearn_monai.records import (
    REQUEST_KEY,
    certificate_path,
    evaluation_path,
    item_scores_path,
    read_json,
    read_record,
    record_path,
    write_atomically,
    write_json,
)
from medunlearn_monai.search_space import SearchSpace, build_search_space

GAP_OBJECTIVE = "val_gap_to_retrain"
TRADEOFF_OBJECTIVE = "val_forget_retain_tradeoff"
PER_REQUEST, PER_BUNDLE = "per_request", "per_bundle"
MODES = (PER_REQUEST, PER_BUNDLE)
DEFAULT_TUNING_SEED = 12345  # far from the small seeds that draw evaluation requests
DEFAULT_AMORTISE_OVER = 100
# Every tuning evaluation scores the validation split where the bundle scores its test split.
VALIDATION_AS_HELD_OUT = {"test_items": "@val_items"}
# Keys every trial sets itself; a user value would send all trials to one file or hide the reference.
SET_BY_TUNING = ("output_model", "model_path", "reference_model", "tracker#tags", "test_items")
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
        data: the data file (or folder) name the bundle reads.
    """

    hyperparameters: dict[str, str]
    defaults: dict[str, Any]
    model_dir: Path
    original_model: Path
    retrained_model: Path
    experiment_name: str
    data: str


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
    """A finished search: every trial, the best one and the parent run's final metrics.

    ``tuned_model`` is the best trial's model copied for the request (``per_request`` only);
    ``provenance`` says where ``per_bundle`` values come from, for the strategy config that ships them.
    """

    strategy: str
    objective: str
    trials: list[TrialResult]
    best: TrialResult
    metrics: dict[str, float]
    run_id: str
    mode: str = PER_REQUEST
    tuned_model: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


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
    data = parser.get_parsed_content("data_file" if "data_file" in parser else "dataset_dir")
    return StrategyConfig(
        hyperparameters=references,
        defaults=defaults,
        model_dir=Path(parser.get_parsed_content("model_dir")),
        original_model=Path(parser.get_parsed_content("original_model")),
        retrained_model=Path(parser.get_parsed_content("retrained_model")),
        experiment_name=str(parser.get_parsed_content("experiment_name")),
        data=os.path.basename(os.path.normpath(str(data))),
    )


def forget_retain_tradeoff(evaluation: Mapping[str, float], original: Mapping[str, float]) -> float:
    """The objective when no retrained reference exists, in points (lower is better).

    ``|forget - held-out| + max(0, original retain - retain)`` on accuracy, or on Dice for
    segmentation: exact retraining leaves the forget data looking like unseen data, and must not cost
    the retained data any quality. Both terms are measurable without retraining. During tuning the
    held-out split (``test_*`` in the evaluation) is the validation split.

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
    mode: str = PER_REQUEST,
    tuning_seed: int = DEFAULT_TUNING_SEED,
    amortise_over: int = DEFAULT_AMORTISE_OVER,
    **overrides: Any,
) -> TuningResult:
    """Search ``strategy``'s hyperparameters for ``n_trials`` trials scored on the validation split.

    The first trial tries the strategy's own values where they lie inside the search space, so the
    search starts from the shipped configuration. ``seed`` seeds the TPE sampler and is the
    bundle's ``seed`` in every trial (the same data order, so trials differ only in their
    hyperparameters). ``per_request`` copies the best model to
    ``<model_dir>/unlearned_<strategy>_tuned.pt`` (strategy ``<strategy>_tuned``, with a certificate of
    its own issued from the trial's) and evaluates it once, after the choice, on the test split.
    ``per_bundle`` retrains a reference for its tuning request under ``<model_dir>/tuning/per_bundle/``
    (reused by later searches with the same settings) and returns the chosen values with their provenance.

    Args:
        bundle: a bundle name or folder.
        strategy: one of the bundle's strategies.
        n_trials: how many unlearn + evaluate trials to run.
        seed: sampler and bundle seed.
        search: narrowed ranges or fixed values by hyperparameter name (see ``build_search_space``).
        mode: ``per_request`` or ``per_bundle``.
        tuning_seed: ``per_bundle`` only: the seed that draws the tuning request.
        amortise_over: ``per_bundle`` only: how many requests share the tuning cost.
        **overrides: bundle overrides as for ``medunlearn run`` (dataset_dir, model_dir, forget request, ...).

    Raises:
        TuningError: for a bad ``n_trials``, mode or amortisation, an override tuning sets itself, or no
            original model.
        ValueError: for an unknown strategy or search space (before any run is created).
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise TuningError(f"--n_trials must be a positive integer, got {n_trials!r}.")
    if mode not in MODES:
        raise TuningError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if isinstance(amortise_over, bool) or not isinstance(amortise_over, int) or amortise_over < 1:
        raise TuningError(f"--amortise_over must be a positive integer, got {amortise_over!r}.")
    clashes = [key for key in SET_BY_TUNING if key in overrides]
    if mode == PER_BUNDLE:
        clashes += [key for key in ("forget_request_file", "data_seed") if key in overrides]
    if clashes:
        raise TuningError(f"tune sets {', '.join(clashes)} itself in {mode} mode; remove them from the command.")
    overrides = {**overrides, "seed": seed}
    if mode == PER_BUNDLE:
        overrides |= {"data_seed": tuning_seed, "forget_fraction": overrides.get("forget_fraction", 0.1)}
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
        "mode": mode,
        "held_out_split": "val",
        "sampler": "TPESampler",
        "search_space": space.describe(),
    }
    if mode == PER_BUNDLE:
        params |= {"tuning_seed": tuning_seed, "amortised_over": amortise_over}
    tracker = tracking.MLflowTracker(config.experiment_name, f"tune-{strategy}", params=params)
    tracker.start()
    try:
        search_run = _Search(bundle, strategy, config, space, overrides, tracker, mode)
        result = search_run.run(study, n_trials, amortise_over)
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
        mode: str,
    ):
        self.bundle = bundle
        self.strategy = strategy
        self.config = config
        self.space = space
        self.overrides = dict(overrides)
        self.tracker = tracker
        self.mode = mode
        tuning_dir = config.model_dir / "tuning"
        self.reference_dir = tuning_dir / PER_BUNDLE if mode == PER_BUNDLE else tuning_dir / strategy
        self.trials_dir = self.reference_dir / strategy if mode == PER_BUNDLE else self.reference_dir
        self.request: str | None = None
        self.reference: Path | None = None
        self.reference_seconds: float | None = None
        self._reference_retrained_now = False
        self.original_evaluation: dict[str, Any] | None = None

    def run(self, study: optuna.Study, n_trials: int, amortise_over: int) -> TuningResult:
        """Run the trials, log the outcome to the parent run and hand over the best values."""
        started = time.perf_counter()
        if self.mode == PER_BUNDLE:
            self._retrain_tuning_reference()
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
        best = trials[study.best_trial.number]
        tuning_seconds = time.perf_counter() - started
        metrics = {"best_objective": best.objective}
        if best.gap_to_retrain is not None:
            metrics["best_val_gap_to_retrain"] = best.gap_to_retrain
        self.tracker.log_params({f"best_{name}": value for name, value in best.params.items()})
        self.tracker.log_params({"objective": self.objective, REQUEST_KEY: self.request, "best_trial": best.number})
        table = self.trials_dir / "tuning_trials.json"
        write_json(table, {"objective": self.objective, "best_trial": best.number, "trials": [_row(t) for t in trials]})
        self.tracker.log_artifact(table, "tables")
        if self.mode == PER_BUNDLE:
            return self._finish_per_bundle(trials, best, tuning_seconds, metrics, amortise_over)
        return self._finish_per_request(trials, best, tuning_seconds, metrics)

    @property
    def objective(self) -> str:
        return GAP_OBJECTIVE if self.reference else TRADEOFF_OBJECTIVE

    def _finish_per_request(
        self, trials: list[TrialResult], best: TrialResult, tuning_seconds: float, metrics: dict[str, float]
    ) -> TuningResult:
        """Charge the whole search to this request, copy the best model and evaluate it on the test split."""
        metrics["tuning_seconds"] = tuning_seconds
        if self.reference_seconds is not None:
            metrics["speedup_vs_retrain_incl_tuning"] = self.reference_seconds / (tuning_seconds + best.unlearn_seconds)
        tuned = self._copy_best(best, tuning_seconds)
        child = workflows.child_run_overrides(self.tracker.run_id, tuning_trial="chosen")
        retrained = self.config.retrained_model
        reference = retrained_reference(retrained, self.request) if self.request else None
        self._workflow("evaluate", **child, model_path=str(tuned), reference_model=str(reference or NO_REFERENCE))
        self.tracker.log_metrics(metrics)
        run_id = self.tracker.run_id
        return TuningResult(self.strategy, self.objective, trials, best, metrics, run_id, tuned_model=tuned)

    def _finish_per_bundle(
        self,
        trials: list[TrialResult],
        best: TrialResult,
        tuning_seconds: float,
        metrics: dict[str, float],
        amortise_over: int,
    ) -> TuningResult:
        """Bill the search (reference retraining included) over ``amortise_over`` requests; write the provenance."""
        retrain_seconds = float(self.reference_seconds or 0.0)
        if not self._reference_retrained_now:
            tuning_seconds += retrain_seconds  # reused from an earlier search, yet part of what tuning costs
        metrics |= {
            "tuning_seconds": tuning_seconds,
            "tuning_seconds_per_request": tuning_seconds / amortise_over,
            "speedup_vs_retrain_incl_tuning": retrain_seconds / (best.unlearn_seconds + tuning_seconds / amortise_over),
        }
        provenance = {
            "method": f"per_bundle Optuna TPE search, objective {self.objective}, test split never read",
            "tuning_run": self.tracker.run_id,
            "data": self.config.data,
            "seeds": {"seed": self.overrides["seed"], "tuning_seed": self.overrides["data_seed"]},
            "forget_fraction": self.overrides["forget_fraction"],
            "n_trials": len(trials),
            "objective": self.objective,
            "best_objective": best.objective,
            "tuning_seconds": tuning_seconds,
            "tuning_retrain_seconds": retrain_seconds,
            "amortised_over": amortise_over,
        }
        write_json(self.trials_dir / "provenance.json", {"values": best.params, "provenance": provenance})
        self.tracker.log_artifact(self.trials_dir / "provenance.json", "tables")
        self.tracker.log_metrics(metrics)
        return TuningResult(
            self.strategy, self.objective, trials, best, metrics, self.tracker.run_id, PER_BUNDLE, None, provenance
        )

    def _retrain_tuning_reference(self) -> None:
        """Retrain exactly for the tuning request (or reuse that retraining) and evaluate it on validation data."""
        model = self.reference_dir / "retrained.pt"
        settings_path = self.reference_dir / "reference_settings.json"
        settings = {key: str(value) for key, value in sorted(self.overrides.items()) if key != "tracker#tags"}
        self._reference_retrained_now = not (
            settings_path.is_file() and read_json(settings_path) == settings and evaluation_path(model).is_file()
        )
        if self._reference_retrained_now:
            settings_path.unlink(missing_ok=True)
            child = workflows.child_run_overrides(self.tracker.run_id, tuning_trial="reference")
            self._workflow("train", **child, output_model=str(model))
            self._evaluate_held_out(model, child, NO_REFERENCE)
            write_json(settings_path, settings)
        self.request = read_record(model)[REQUEST_KEY]
        self.reference = model
        self.reference_seconds = float(read_record(model)["seconds"])

    def _run_trial(self, number: int, params: Mapping[str, Any]) -> TrialResult:
        model = self.trials_dir / f"trial_{number}.pt"
        child = workflows.child_run_overrides(self.tracker.run_id, tuning_trial=str(number))
        values = {self.config.hyperparameters[name]: value for name, value in params.items()}
        started = time.perf_counter()
        self._workflow("unlearn", self.strategy, **values, **child, output_model=str(model))
        record = read_record(model)
        if self.request is None:
            self._choose_references(record[REQUEST_KEY])
        self._evaluate_held_out(model, child, str(self.reference) if self.reference else NO_REFERENCE)
        evaluation = read_json(evaluation_path(model))
        gap = evaluation.get("gap_to_retrain")
        if self.reference is None:
            objective = forget_retain_tradeoff(evaluation, self._original_evaluation())
        elif gap is None:
            raise TuningError(f"the evaluation of {model} has no gap_to_retrain against {self.reference}.")
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

    def _evaluate_held_out(self, model: Path, child: Mapping[str, Any], reference: str) -> None:
        """Evaluate ``model`` with the validation split in the test split's place."""
        self._workflow("evaluate", **child, **VALIDATION_AS_HELD_OUT, model_path=str(model), reference_model=reference)

    def _choose_references(self, request: str) -> None:
        """``per_request``: copy the request's retrained model beside the trials and evaluate it on validation data."""
        self.request = request
        retrained = retrained_for(self.config.retrained_model, request)
        if retrained is None:
            print(
                f"No retrained model for this forget request at {self.config.retrained_model}: "
                f"tuning minimises the {TRADEOFF_OBJECTIVE} instead of the {GAP_OBJECTIVE}.",
                flush=True,
            )
            return
        self.reference = self._copy_model(retrained, self.trials_dir / "reference_retrained.pt")
        child = workflows.child_run_overrides(self.tracker.run_id, tuning_trial="reference")
        self._evaluate_held_out(self.reference, child, NO_REFERENCE)
        self.reference_seconds = float(read_record(retrained)["seconds"])

    def _original_evaluation(self) -> dict[str, Any]:
        """The original model's validation evaluation for this request (a copy beside the trials, evaluated once)."""
        if self.original_evaluation is None:
            original = self._copy_model(self.config.original_model, self.trials_dir / "reference_original.pt")
            child = workflows.child_run_overrides(self.tracker.run_id, tuning_trial="original")
            self._evaluate_held_out(original, child, NO_REFERENCE)
            self.original_evaluation = read_json(evaluation_path(original))
        return self.original_evaluation

    @staticmethod
    def _copy_model(source: Path, target: Path) -> Path:
        """Copy a model and its record; the copy's evaluations never touch the source's."""
        for origin, destination in ((source, target), (record_path(source), record_path(target))):
            write_atomically(destination, lambda temporary, origin=origin: shutil.copyfile(origin, temporary))
        evaluation_path(target).unlink(missing_ok=True)
        return target

    def _copy_best(self, best: TrialResult, tuning_seconds: float) -> Path:
        """Copy the best trial's model to ``unlearned_<strategy>_tuned`` with a record of its search and a
        certificate of its own."""
        tuned = self.config.model_dir / f"unlearned_{self.strategy}_tuned.pt"
        write_atomically(tuned, lambda temporary: shutil.copyfile(best.model, temporary))
        for stale in (evaluation_path(tuned), item_scores_path(tuned), certificate_path(tuned)):
            stale.unlink(missing_ok=True)  # the validation scores of the trial do not describe the test split
        record = {
            **read_record(best.model),
            "strategy": f"{self.strategy}_tuned",
            "tuning": {
                "run_id": self.tracker.run_id,
                "mode": PER_REQUEST,
                "trial": best.number,
                "objective": self.objective,
                "value": best.objective,
                "hyperparameters": best.params,
                "tuning_seconds": tuning_seconds,
            },
        }
        write_json(record_path(tuned), record)
        certify_copy(best.model, tuned, {key: record[key] for key in ("strategy", "tuning")}, self.tracker)
        return tuned


def retrained_for(retrained_model: Path, request_sha256: str) -> Path | None:
    """``retrained_model`` when it was retrained for this very request, else None."""
    return retrained_model if _request_of(record_path(retrained_model)) == request_sha256 else None


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
    best = f"best: trial {result.best.number}, {result.objective} {result.best.objective:.2f}"
    if result.mode == PER_BUNDLE:
        amortised = result.provenance["amortised_over"]
        best += f"; these values apply to every request (tuning cost amortised over {amortised} requests)"
        cost = cost.replace("tuning included", f"tuning amortised over {amortised} requests")
    else:
        best += f" -> {result.tuned_model} (evaluated on the test split after the choice)"
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], "", best, f"{cost} (MLflow run {result.run_id})"])
