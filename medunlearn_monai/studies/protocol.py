"""Measurement protocol: several seeds, exact retraining, a noise floor and every strategy, as mean ± std.

One seed's ranking of unlearning methods does not survive a re-run: differences of a few gap points
are noise. For every seed ``s`` the protocol trains the original model (initialisation and data
order from ``s``) and, for every forget fraction, draws the random forget request from ``s``,
retrains exactly, unlearns with every strategy and evaluates all models. It also retrains a second
time with seed ``s + NOISE_SEED_OFFSET`` on the first (headline) fraction's request and data: that second exact model,
scored against the first, is the **noise floor**, the smallest Avg. Gap (and attack AUC) any method
can honestly reach. Differences between methods smaller than the spread over seeds, or gaps below
the floor, are no differences.

When asked (``ulira_shadow_pairs`` = K >= 2), the headline fraction of every seed also gets K U-LiRA
shadow pairs (original, retrained, noise-floor retraining and every strategy with seeds
``s + SHADOW_SEED_OFFSET + k``, on the same request): each strategy's U-LiRA AUC against the retrained
target, and the noise floor's, the AUC the attack reaches between two exact retrainings with K shadows.

Everything runs through the bundle's own workflows (:func:`medunlearn_monai.workflows.run_workflow`) as
MLflow child runs of one ``workflow=protocol`` run, which logs the aggregate table. A ledger in the work
folder records every finished step with the overrides it ran with, so re-running the same command skips
finished steps (a run interrupted between seeds resumes at the first unfinished step).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medunlearn_monai.checkpoints import checkpoint_dir, latest_checkpoint
from medunlearn_monai.records import evaluation_path, read_json, record_path, write_json
from medunlearn_monai.studies._runs import ChildWorkflows, StudyError, study_run
from medunlearn_monai.studies.protocol_plots import (
    NOISE_FLOOR,
    RETRAIN,
    gap_versus_speedup,
    test_accuracy_versus_fraction,
)
from medunlearn_monai.studies.ulira import ulira_aucs
from medunlearn_monai.workflows import config_files, config_value
from medunlearn_monai.workflows import strategies as bundle_strategies

NOISE_SEED_OFFSET = 1000
SHADOW_SEED_OFFSET = 100  # U-LiRA shadow pair k of seed s trains with seed s + 100 + k
ORIGINAL = "original"
LEDGER = "protocol_ledger.json"
NOISE = "retrained_noise"  # the noise floor's model file, beside the first retraining
ULIRA = "ulira"  # the U-LiRA shadow pairs' folder, inside the headline fraction's
# Overrides the protocol sets per step; ``forget_where`` (e.g. women only) stays and shapes every request.
PER_STEP_KEYS = ("seed", "data_seed", "model_dir", "forget_fraction", "output_model", "model_path")
# Overrides that change between invocations of the same protocol and so are not part of a step's identity.
_VOLATILE_KEYS = ("tracker#tags",)
# The metrics of a method row (taken from its evaluation) that the aggregate summarises.
ROW_METRICS = (
    "retain_acc",
    "forget_acc",
    "test_acc",
    "probe_forget_acc",
    "probe_test_acc",
    "test_auc",
    "mia_efficacy",
    "mia_loss_auc",
    "gap_to_retrain",
    "retain_dice",
    "forget_dice",
    "test_dice",
    "test_auc_gap",
    "test_auc_female",
    "test_auc_male",
    "ulira_auc",
)


@dataclass(frozen=True)
class Step:
    """One workflow of the protocol: its ledger key, title, workflow, strategy, overrides and the file it leaves."""

    key: str
    title: str
    workflow: str
    strategy: str | None
    overrides: dict[str, Any]
    output: Path
    original: Path | None = None  # the seed's original model, copied into the step's folder before it runs
    configs: str = ""  # digest of the workflow's config files: a changed strategy file makes its steps stale

    def signature(self) -> str:
        """SHA-256 of what makes the step's result what it is: workflow, strategy, config files, stable overrides."""
        stable = {key: value for key, value in self.overrides.items() if key not in _VOLATILE_KEYS}
        text = json.dumps([self.workflow, self.strategy, self.configs, stable], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def finished(self, ledger: Mapping[str, str]) -> bool:
        """Run before with the same overrides, and its model (and evaluation) still there."""
        outputs = [self.output, record_path(self.output)]
        if self.workflow == "evaluate":
            outputs = [evaluation_path(self.output)]
        return ledger.get(self.key) == self.signature() and all(path.is_file() for path in outputs)


@dataclass
class ProtocolResult:
    """A finished protocol: one row per seed, forget fraction and method, and their aggregate.

    ``summary[fraction][method]`` holds ``<metric>_mean`` and ``<metric>_std`` (sample standard deviation,
    ``ddof=1``; None for a single seed) for every metric in the rows, and ``seeds`` (how many).
    """

    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, Any]]]
    seeds: list[int]
    fractions: list[float]
    strategies: list[str]
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_id: str | None = None
    seconds: float = 0.0


def run_protocol(
    bundle: str,
    strategies: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    forget_fractions: Sequence[float] = (0.1,),
    work_dir: str | Path | None = None,
    train_epochs: int | None = None,
    ulira_shadow_pairs: int = 0,
    **overrides: Any,
) -> ProtocolResult:
    """Run the protocol for ``bundle``; the first forget fraction is the main one (the headline row).

    Args:
        bundle: a bundle name or folder.
        strategies: unlearning strategies to compare (default: every strategy the bundle ships).
        seeds: one full repetition per seed (at least 3 for a comparison worth reporting).
        forget_fractions: fractions of the training subjects to forget, one request per seed and fraction.
        work_dir: where models go (default ``<model_dir>/protocol``); keep it to resume.
        train_epochs: epochs of the original and retrained models (default: the bundle's ``max_epochs``); the
            strategies keep their own epochs.
        ulira_shadow_pairs: K U-LiRA shadow pairs per seed on the headline fraction (0: no U-LiRA; else >= 2).
        **overrides: bundle overrides for every workflow (dataset_dir, data_file, num_classes, batch_size,
            experiment_name, forget_where, ...). ``seed``, ``model_dir`` and the forget fraction are set per step.

    Raises:
        StudyError: for no seeds, repeated seeds or fractions, a fraction outside (0, 1), an unknown strategy, or
            a single shadow pair.
    """
    seeds, fractions = _checked_seeds(seeds), _checked_fractions(forget_fractions)
    if ulira_shadow_pairs == 1 or ulira_shadow_pairs < 0:
        raise StudyError(f"U-LiRA needs at least 2 shadow pairs (or 0 for none), got {ulira_shadow_pairs}.")
    available = bundle_strategies(bundle)
    chosen = list(strategies) if strategies else available
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise StudyError(f"unknown strategies {', '.join(unknown)} for {bundle}; choose from {', '.join(available)}.")
    if overrides.get("forget_request_file"):
        raise StudyError("the protocol draws a random request per seed: give --forget_fractions, not a request file.")
    base = {key: value for key, value in overrides.items() if key not in (*PER_STEP_KEYS, "forget_request_file")}
    model_dir = overrides.get("model_dir") or config_value(bundle, "model_dir", **base)
    work = Path(work_dir or Path(model_dir) / "protocol")
    train = {"max_epochs": train_epochs} if train_epochs else {}
    steps = [
        replace(step, configs=config_digest(bundle, step.workflow, step.strategy))
        for seed in seeds
        for step in protocol_steps(work, seed, fractions, chosen, base, train, ulira_shadow_pairs)
    ]
    tuning = {name: strategy_tuning(bundle, name, base) for name in chosen}
    params = {
        "strategies": ",".join(chosen),
        "seeds": ",".join(map(str, seeds)),
        "forget_fractions": ",".join(map(str, fractions)),
        "noise_seed_offset": NOISE_SEED_OFFSET,
        "train_epochs": train_epochs or "bundle default",
        "ulira_shadow_pairs": ulira_shadow_pairs,
    }
    started = time.perf_counter()
    with study_run(bundle, "protocol", overrides, params) as tracker:
        _run_steps(bundle, tracker, work, steps)
        rows = [
            row
            for seed in seeds
            for fraction in fractions
            for row in method_rows(_folder(work, seed, fraction), seed, fraction, chosen, tuning)
        ]
        result = ProtocolResult(rows, summarise(rows), seeds, fractions, chosen, tuning, tracker.run_id)
        result.seconds = time.perf_counter() - started
        _log_result(tracker, result)
    return result


def protocol_steps(
    work: Path,
    seed: int,
    fractions: Sequence[float],
    strategies: Sequence[str],
    overrides: Mapping[str, Any],
    train: Mapping[str, Any],
    shadow_pairs: int = 0,
) -> list[Step]:
    """The ordered steps of one seed: the original model, then per fraction retrain, unlearn and evaluate.

    The first (headline) fraction also gets the noise floor's second retraining. The retrained model is
    evaluated before the models scored against it.
    """
    seed_dir = work / f"seed_{seed}"
    original = seed_dir / "model.pt"
    common = {**overrides, "seed": seed}
    steps = [
        Step(f"seed_{seed}/original", f"seed {seed}: train the original", "train", None,
             {**common, **train, "model_dir": str(seed_dir)}, original),
    ]  # fmt: skip
    for fraction in fractions:
        folder = _folder(work, seed, fraction)
        tag = f"seed {seed}, forget {fraction:g}"
        shared = {**common, "model_dir": str(folder), "forget_fraction": fraction}
        key = f"seed_{seed}/forget_{fraction:g}"
        retrainings = [
            Step(f"{key}/retrain", f"{tag}: retrain without the forget set", "train", None,
                 {**shared, **train}, folder / "retrained.pt", original),
        ]  # fmt: skip
        evaluated = ["retrained", *(f"unlearned_{name}" for name in strategies), "model"]
        shadows: list[Step] = []
        if fraction == fractions[0]:  # the noise floor of the headline fraction
            noise = {"seed": seed + NOISE_SEED_OFFSET, "data_seed": seed, "output_model": str(folder / f"{NOISE}.pt")}
            retrainings.append(
                Step(f"{key}/noise_floor", f"{tag}: retrain again with seed {seed + NOISE_SEED_OFFSET} (noise floor)",
                     "train", None, {**shared, **train, **noise}, folder / f"{NOISE}.pt", original)
            )  # fmt: skip
            evaluated.insert(1, NOISE)
            for pair in range(1, shadow_pairs + 1):
                shadows += _shadow_pair_steps(folder / ULIRA / f"pair_{pair}", f"{key}/ulira_pair_{pair}",
                                              f"{tag}, U-LiRA shadow pair {pair}", seed + SHADOW_SEED_OFFSET + pair,
                                              seed, strategies, shared, train)  # fmt: skip
        steps += [
            *retrainings,
            *(Step(f"{key}/unlearn_{name}", f"{tag}: unlearn with {name}", "unlearn", name, shared,
                   folder / f"unlearned_{name}.pt", original) for name in strategies),
            *(Step(f"{key}/evaluate_{model}", f"{tag}: evaluate {model}", "evaluate", None,
                   {**shared, "model_path": str(folder / f"{model}.pt")}, folder / f"{model}.pt", original)
              for model in evaluated),
            *shadows,
        ]  # fmt: skip
    return steps


def _shadow_pair_steps(
    folder: Path,
    key: str,
    title: str,
    shadow_seed: int,
    seed: int,
    strategies: Sequence[str],
    request: Mapping[str, Any],
    train: Mapping[str, Any],
) -> list[Step]:
    """One U-LiRA shadow pair: its own original, retraining, noise-floor retraining and strategies, all evaluated.

    The shadow models train with ``shadow_seed`` (initialisation and data order) on the request of ``seed``.
    """
    shared = {**request, "seed": shadow_seed, "data_seed": seed, "model_dir": str(folder)}
    original = {name: value for name, value in shared.items() if name not in ("forget_fraction", "data_seed")}
    noise = {"seed": shadow_seed + NOISE_SEED_OFFSET, "output_model": str(folder / f"{NOISE}.pt")}
    models = ["retrained", NOISE, *(f"unlearned_{name}" for name in strategies)]
    return [
        Step(f"{key}/original", f"{title}: train the original", "train", None, {**original, **train},
             folder / "model.pt"),
        Step(f"{key}/retrain", f"{title}: retrain", "train", None, {**shared, **train}, folder / "retrained.pt"),
        Step(f"{key}/noise_floor", f"{title}: retrain again", "train", None, {**shared, **train, **noise},
             folder / f"{NOISE}.pt"),
        *(Step(f"{key}/unlearn_{name}", f"{title}: unlearn with {name}", "unlearn", name, shared,
               folder / f"unlearned_{name}.pt") for name in strategies),
        *(Step(f"{key}/evaluate_{model}", f"{title}: evaluate {model}", "evaluate", None,
               {**shared, "model_path": str(folder / f"{model}.pt")}, folder / f"{model}.pt") for model in models),
    ]  # fmt: skip


def config_digest(bundle: str, workflow: str, strategy: str | None) -> str:
    """SHA-256 over the contents of the config files a workflow runs with."""
    digest = hashlib.sha256()
    for path in config_files(bundle, workflow, strategy):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _folder(work: Path, seed: int, fraction: float) -> Path:
    return work / f"seed_{seed}" / f"forget_{fraction:g}"


def _run_steps(bundle: str, tracker: Any, work: Path, steps: Sequence[Step]) -> None:
    """Run every unfinished step as a child run, copying each seed's original model into its fractions' folders."""
    ledger_path = work / LEDGER
    ledger: dict[str, str] = read_json(ledger_path) if ledger_path.is_file() else {}
    children = ChildWorkflows(bundle, tracker, {}, len(steps))
    for step in steps:
        if step.finished(ledger):
            children.skip(step.title)
            continue
        if step.original:
            _copy_original(step.original, Path(step.overrides["model_dir"]) / "model.pt")
        children.run(step.title, step.workflow, step.strategy, **step.overrides, **_rerun_settings(step))
        ledger = record_finished(ledger_path, step)


def record_finished(ledger_path: Path, step: Step) -> dict[str, str]:
    """Add ``step`` to the ledger on disk and return it, keeping what protocols running side by side recorded.

    Two protocols may share a work folder (say, seeds 0-1 and seed 2 on two cores): each re-reads the ledger
    under a lock before adding its step, so neither erases the other's finished steps.
    """
    with open(ledger_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ledger: dict[str, str] = read_json(ledger_path) if ledger_path.is_file() else {}
        ledger[step.key] = step.signature()
        write_json(ledger_path, ledger)
    return ledger


def _rerun_settings(step: Step) -> dict[str, bool]:
    """What a step needs to run again in its own folder: ``resume`` after a kill, ``overwrite`` when stale.

    A training step that a killed protocol left checkpoints of continues there (checkpoints refuse other
    settings, see :class:`~medunlearn_monai.checkpoints.RunCheckpointer`, so a step whose overrides changed
    fails with that message instead of mixing two runs). A training step whose model exists but that the
    ledger does not hold as finished with these settings is stale: the protocol owns the folder and replaces it.
    """
    if step.workflow == "evaluate":
        return {}
    settings = {"resume": True} if latest_checkpoint(checkpoint_dir(step.output)) is not None else {}
    if step.workflow == "train" and step.output.is_file():
        settings["overwrite"] = True
    return settings


def _copy_original(original: Path, target: Path) -> None:
    """The seed's original model (and record) beside this fraction's models, where unlearning reads it."""
    if target.is_file() and record_path(target).is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(original, target)
    shutil.copy2(record_path(original), record_path(target))


def strategy_tuning(bundle: str, strategy: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy's ``provenance`` (how its shipped values were chosen), {} when its config has none."""
    try:
        provenance = config_value(bundle, "provenance", "unlearn", strategy, **overrides)
    except KeyError:
        return {}
    return dict(provenance) if isinstance(provenance, Mapping) else {}


def tuning_charge(provenance: Mapping[str, Any], retrain_seconds: float) -> float:
    """Seconds of tuning one request pays: the tuning's cost in retrainings, times this retraining, over N requests.

    A strategy tuned once per bundle (``per_bundle``) spends ``tuning_seconds`` which is
    ``tuning_seconds / tuning_retrain_seconds`` retrainings of the tuning set-up; spread over the
    ``amortised_over`` requests the values serve, each request pays that fraction of its own retraining.
    Untuned strategies pay nothing (their provenance says so).
    """
    try:
        retrainings = float(provenance["tuning_seconds"]) / float(provenance["tuning_retrain_seconds"])
        requests = float(provenance["amortised_over"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0.0
    return retrainings * retrain_seconds / max(requests, 1.0)


def method_rows(
    folder: Path,
    seed: int,
    fraction: float,
    strategies: Sequence[str],
    tuning: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per model of a seed and fraction: original, retrain, noise floor (where made) and every strategy.

    Each row holds the evaluation's :data:`ROW_METRICS`, ``seconds`` (training-loop time), ``speedup``
    (retraining's seconds over the model's), ``speedup_incl_tuning`` (with the amortised tuning charge)
    and ``test_drop_vs_retrain`` (retrained minus the model's test accuracy, in points).

    Raises:
        StudyError: when a model or its evaluation is missing.
    """
    tuning = tuning or {}
    models = {ORIGINAL: "model", RETRAIN: "retrained"}
    if evaluation_path(folder / f"{NOISE}.pt").is_file():
        models[NOISE_FLOOR] = NOISE
    models |= {name: f"unlearned_{name}" for name in strategies}
    evaluations = {method: _evaluation(folder / f"{model}.pt") for method, model in models.items()}
    ulira = ulira_by_method(folder, [name for name in models if name not in (ORIGINAL, RETRAIN)])
    retrain_seconds = float(read_json(record_path(folder / "retrained.pt"))["seconds"])
    rows = []
    for method, model in models.items():
        evaluation = evaluations[method]
        row: dict[str, Any] = {"seed": seed, "forget_fraction": fraction, "method": method}
        row |= {name: evaluation[name] for name in ROW_METRICS if name in evaluation}
        if method in ulira:
            row["ulira_auc"] = ulira[method]
        if method != ORIGINAL:
            seconds = float(read_json(record_path(folder / f"{model}.pt"))["seconds"])
            charge = tuning_charge(tuning.get(method, {}), retrain_seconds)
            row |= {
                "seconds": seconds,
                "speedup": retrain_seconds / max(seconds, 1e-9),
                "speedup_incl_tuning": retrain_seconds / max(seconds + charge, 1e-9),
                "tuning_charge_seconds": charge,
            }
        if "test_acc" in evaluation and "test_acc" in evaluations[RETRAIN]:
            row["test_drop_vs_retrain"] = 100.0 * (evaluations[RETRAIN]["test_acc"] - evaluation["test_acc"])
        rows.append(row)
    return rows


def ulira_by_method(folder: Path, methods: Sequence[str]) -> dict[str, float]:
    """U-LiRA AUC of every method (the noise floor included) against the shadow pairs in ``folder/ulira``; {} if none.

    The noise floor's AUC is the attack telling the second exact retraining from the first: with K shadow
    pairs it is what the attack reads where there is nothing to find.
    """
    shadows = sorted((folder / ULIRA).glob("pair_*"))
    if not shadows:
        return {}
    files = {NOISE_FLOOR: f"{NOISE}.pt"}
    aucs = ulira_aucs(folder, shadows, methods, files)
    return {method: aucs[f"ulira_auc_{method}"] for method in methods}


def _evaluation(model: Path) -> dict[str, Any]:
    path = evaluation_path(model)
    if not path.is_file():
        raise StudyError(f"{model} has no evaluation: the protocol did not finish; run it again to resume.")
    return read_json(path)


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean and sample standard deviation (``ddof=1``) over seeds of every numeric value, per fraction and method.

    Returns:
        ``{fraction (as text): {method: {"seeds": n, "<metric>_mean": x, "<metric>_std": x or None}}}``;
        non-finite values (an undefined AUC) are left out of their metric's mean and std.
    """
    groups: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[f"{row['forget_fraction']:g}"][row["method"]].append(row)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for fraction, methods in groups.items():
        summary[fraction] = {}
        for method, method_rows_ in methods.items():
            entry: dict[str, Any] = {"seeds": len(method_rows_)}
            names = [
                name
                for name in dict.fromkeys(key for row in method_rows_ for key in row)
                if name not in ("seed", "forget_fraction", "method")
            ]
            for name in names:
                values = [float(row[name]) for row in method_rows_ if _is_number(row.get(name))]
                values = [value for value in values if math.isfinite(value)]
                if not values:
                    continue
                entry[f"{name}_mean"] = float(np.mean(values))
                entry[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
            summary[fraction][method] = entry
    return summary


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_seeds(seeds: Sequence[int] | int) -> list[int]:
    chosen = [int(seed) for seed in ([seeds] if isinstance(seeds, int) else seeds)]
    if not chosen or len(set(chosen)) != len(chosen):
        raise StudyError(f"--seeds needs distinct seeds, got {seeds!r}.")
    clash = [seed for seed in chosen if seed + NOISE_SEED_OFFSET in chosen]
    if clash:
        raise StudyError(f"seeds {clash} and their noise-floor seeds (+{NOISE_SEED_OFFSET}) would coincide.")
    return chosen


def _checked_fractions(fractions: Sequence[float] | float) -> list[float]:
    chosen = [float(value) for value in ([fractions] if isinstance(fractions, (int, float)) else fractions)]
    if not chosen or len(set(chosen)) != len(chosen):
        raise StudyError(f"--forget_fractions needs distinct fractions, got {fractions!r}.")
    bad = [value for value in chosen if not 0.0 < value < 1.0]
    if bad:
        raise StudyError(f"forget fractions must lie between 0 and 1 (exclusive), got {bad}.")
    return chosen


def format_summary(result: ProtocolResult, fraction: float | None = None) -> str:
    """A text table of one fraction's aggregate (default: the main one): mean ± std over the seeds."""
    fraction = result.fractions[0] if fraction is None else fraction
    entries = result.summary[f"{fraction:g}"]
    columns = [
        ("gap_to_retrain", "Avg. Gap", 1.0, 2),
        ("speedup_incl_tuning", "speedup", 1.0, 1),
        ("retain_acc", "retain acc", 100.0, 1),
        ("forget_acc", "forget acc", 100.0, 1),
        ("test_acc", "test acc", 100.0, 1),
        ("mia_loss_auc", "loss-attack AUC", 1.0, 3),
        ("ulira_auc", "U-LiRA AUC", 1.0, 3),
    ]
    columns = [column for column in columns if any(f"{column[0]}_mean" in entry for entry in entries.values())]
    header = ["method", *(title for _, title, _, _ in columns)]
    lines = [header]
    for method, entry in entries.items():
        cells = [method]
        for name, _, scale, digits in columns:
            mean, std = entry.get(f"{name}_mean"), entry.get(f"{name}_std")
            cells.append("-" if mean is None else _pm(scale * mean, None if std is None else scale * std, digits))
        lines.append(cells)
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    caption = (
        f"forget fraction {fraction:g}, mean ± std over seeds {', '.join(map(str, result.seeds))}; "
        f"{NOISE_FLOOR}: a second exact retraining (seed + {NOISE_SEED_OFFSET}) scored against the first"
    )
    return "\n".join([caption, text[0], "-" * len(text[0]), *text[1:]])


def _pm(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _log_result(tracker: Any, result: ProtocolResult) -> None:
    """The aggregate as metrics, tables and plots of the protocol's parent run."""
    main = result.summary[f"{result.fractions[0]:g}"]
    metrics = {"protocol_seconds": result.seconds}
    for method, entry in main.items():
        for name in ("gap_to_retrain", "test_acc", "mia_loss_auc", "ulira_auc", "speedup_incl_tuning"):
            if entry.get(f"{name}_mean") is not None:
                metrics[f"{method}_{name}_mean"] = entry[f"{name}_mean"]
    tracker.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as scratch:
        for name, content in (("protocol_rows.json", result.rows), ("protocol_summary.json", result.summary)):
            path = Path(scratch) / name
            path.write_text(json.dumps(content, indent=2))
            tracker.log_artifact(path, "tables")
    tracker.log_figure(gap_versus_speedup(main, result.strategies), "plots/gap_vs_speedup.png")
    if len(result.fractions) > 1:
        figure = test_accuracy_versus_fraction(result.summary, [RETRAIN, *result.strategies])
        tracker.log_figure(figure, "plots/test_acc_vs_forget_fraction.png")
