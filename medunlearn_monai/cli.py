"""``medunlearn``: a thin command line over the bundles' ``monai.bundle`` workflows.

medunlearn demo [--output_dir demo_output]
medunlearn synthesize [--dataset tissuemnist|mrbrains18|chexpert] --output_dir data
medunlearn run BUNDLE WORKFLOW [--strategy NAME] [--multi_gpu] [--key value ...]
medunlearn guest BUNDLE_DIR train|unlearn|evaluate|verify [--strategy NAME] [--subject_key KEY] [--print_command]
    [--key value ...]
medunlearn compare --experiment NAME
medunlearn register --model_path models/unlearned_salun.pt --name NAME
medunlearn verify-certificate CERT MODEL --bundle NAME --forget_request_file FILE [--key value ...]
medunlearn report --experiment NAME [--output report.html]
medunlearn ulira BUNDLE --strategies rl,salun [--shadow_pairs 2] [--key value ...]
medunlearn protocol BUNDLE [--strategies rl,salun] [--seeds 0,1,2] [--forget_fractions 0.1,0.5]
    [--ulira_shadow_pairs 2] [--key value ...]
medunlearn difficulty BUNDLE --strategies rl,salun [--fraction 0.1] [--key value ...]
medunlearn tune BUNDLE --strategy NAME [--n_trials 8] [--seed 0] [--search "{...}"]
    [--mode per_request|per_bundle] [--tuning_seed 12345] [--amortise_over 100] [--key value ...]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fire

from medunlearn_monai import certificate as erasure_certificate
from medunlearn_monai import registry, studies, tracking, tuning, workflows
from medunlearn_monai.comparison import comparison_rows, format_table
from medunlearn_monai.data.synthetic import (
    write_synthetic_chexpert,
    write_synthetic_mrbrains18,
    write_synthetic_tissuemnist,
)
from medunlearn_monai.demo import run_demo
from medunlearn_monai.flags import as_flag
from medunlearn_monai.guest.command import run_guest_command
from medunlearn_monai.report import write_report
from medunlearn_monai.studies.protocol import format_summary

HELP_FLAGS = ("--help", "-h")


class Commands:
    """Machine unlearning for clinical imaging models, as MONAI bundles."""

    def synthesize(
        self,
        output_dir: str = "data",
        dataset: str = "tissuemnist",
        n_train: int = 1000,
        n_val: int = 300,
        n_test: int = 1000,
        n_subjects: int = 7,
        spacing: Sequence[float] = (0.958, 0.958, 3.0),
        n_patients: int = 60,
        seed: int = 0,
        arm: str = "alike",
        distinct_subjects: str | int | Sequence[Any] | None = None,
        n_distinct: int | None = None,
        **difficulty: float,
    ) -> str:
        """Write synthetic data in a real format into ``output_dir``.

        ``tissuemnist``: ``tissuemnist.npz`` (MedMNIST format, ``n_train``/``n_val``/``n_test`` images).
        ``mrbrains18``: ``training/<subject>/...`` (MRBrainS18 layout, ``n_subjects`` subjects at ``spacing`` mm).
        ``--arm alike`` (default) writes subjects that are all deformations of one template; ``--arm distinct`` makes
        the subjects ``--distinct_subjects 4,070`` (IDs), or the first ``--n_distinct N``, outliers: another scanner's
        FLAIR and an infarct (label 9) only they have; the other subjects stay as in ``alike``.
        ``chexpert``: ``CheXpert-v1.0-small/`` (CSVs and JPEGs of ``n_patients`` training patients); ``--cue_strength``,
        ``--noise_std``, ``--label_noise``, ``--female_prevalence`` and ``--male_prevalence`` set its difficulty.
        """
        if difficulty and dataset != "chexpert":
            raise ValueError(f"unknown setting(s) {sorted(difficulty)} for {dataset!r}; only chexpert takes them.")
        if dataset != "mrbrains18" and (arm != "alike" or distinct_subjects is not None or n_distinct is not None):
            raise ValueError(f"--arm, --distinct_subjects and --n_distinct are for mrbrains18, not {dataset!r}.")
        if distinct_subjects is not None and n_distinct is not None:
            raise ValueError("give --distinct_subjects or --n_distinct, not both.")
        if dataset == "tissuemnist":
            path = write_synthetic_tissuemnist(Path(output_dir) / "tissuemnist.npz", n_train, n_val, n_test, seed=seed)
            return str(path)
        if dataset == "mrbrains18":
            distinct = n_distinct if distinct_subjects is None else _names(distinct_subjects)
            subjects = write_synthetic_mrbrains18(
                output_dir, n_subjects, tuple(spacing), seed=seed, arm=arm, distinct_subjects=distinct
            )
            return f"{len(subjects)} subjects in {Path(output_dir) / 'training'}"
        if dataset == "chexpert":
            root = Path(output_dir) / "CheXpert-v1.0-small"
            return str(write_synthetic_chexpert(root, n_patients, seed=seed, **difficulty))
        raise ValueError(f"unknown dataset {dataset!r}; choose tissuemnist, mrbrains18 or chexpert.")

    def run(
        self, bundle: str, workflow: str, strategy: str | None = None, multi_gpu: bool | str = False, **overrides: Any
    ) -> None:
        """Run one workflow (train, unlearn, evaluate, inference) of a bundle; ``--key value`` overrides config keys.

        ``--multi_gpu`` (train, unlearn) makes this process one rank of a torchrun group:
        ``torchrun --nproc_per_node=N -m medunlearn_monai.cli run BUNDLE train --multi_gpu``.
        """
        workflows.run_workflow(bundle, workflow, strategy, as_flag(multi_gpu, "multi_gpu"), **overrides)

    def guest(
        self, bundle: str, workflow: str, strategy: str | None = None, print_command: bool | str = False, **options: Any
    ) -> str | None:
        """Train (exact retraining with --forget_request_file), unlearn, evaluate or verify a MONAI bundle we did not
        write (a model-zoo bundle, your own), without editing it: its own configs run with ours layered after them.

        ``--subject_key KEY`` reads each item's subject ID from that item key (default: the image file's name without
        its extension); ``--items_key`` and ``--test_items_key`` name the guest's item lists, ``--layout`` and
        ``--task`` what is otherwise read from the bundle; ``verify`` takes ``--certificate FILE --model_path FILE``;
        ``--print_command`` prints the equivalent ``python -m monai.bundle run`` command instead of running it.
        """
        return run_guest_command(bundle, workflow, strategy, as_flag(print_command, "print_command"), **options)

    def compare(self, experiment: str) -> str:
        """Print the method comparison table of an MLflow experiment."""
        return format_table(comparison_rows(experiment))

    def register(self, model_path: str, name: str, experiment: str = "model-registry") -> str:
        """Register a model file with its record, evaluation and certificate as the next version of MLflow model
        ``name``; prints the version's URI and, for an unlearned model, the alias of its forget request."""
        entry = registry.register_model(model_path, name, experiment)
        pinned = f" and {entry.alias_uri}" if entry.alias_uri else ""
        return f"Registered {entry.name} version {entry.version} ({', '.join(entry.artifacts)}): {entry.uri}{pinned}"

    def verify_certificate(self, certificate: str, model: str, bundle: str, **overrides: Any) -> str:
        """Re-check an erasure certificate: the model file's SHA-256, the request and retain manifest rebuilt from
        the bundle's data (``--dataset_dir``, ``--forget_request_file`` and any overrides of the run), and the items
        the trainer learned from against that manifest.

        Prints a verdict per check, then the guarantee (exact or approximate) and, for an approximate one, the
        evaluation evidence beside the model and what is missing; exits non-zero when any check fails.
        """
        verdicts = erasure_certificate.verify_certificate(certificate, model, bundle, **overrides)
        print("\n".join(str(verdict) for verdict in verdicts))
        print("\n".join(erasure_certificate.guarantee_lines(certificate, model)))
        return erasure_certificate.require_all_passed(verdicts)

    def report(self, experiment: str, output: str = "report.html") -> str:
        """Write a self-contained HTML report of an MLflow experiment and log it there as ``report/report.html``."""
        path = write_report(experiment, output)
        return f"Report of experiment '{experiment}' written to {path} and logged to MLflow as report/report.html."

    def ulira(
        self,
        bundle: str,
        strategies: str | Sequence[str],
        shadow_pairs: int = 2,
        work_dir: str | None = None,
        **overrides: Any,
    ) -> str:
        """U-LiRA attack on already evaluated unlearned models: trains ``shadow_pairs`` shadow pairs per strategy.

        ``--key value`` overrides must repeat those the targets were made with (dataset_dir, model_dir, request).
        """
        results = studies.run_ulira_study(bundle, _names(strategies), shadow_pairs, work_dir, **overrides)
        return "\n".join(f"{name}: {value:.3f}" for name, value in results.items())

    def protocol(
        self,
        bundle: str,
        strategies: str | Sequence[str] | None = None,
        seeds: str | int | Sequence[int] = (0, 1, 2),
        forget_fractions: str | float | Sequence[float] = (0.1,),
        work_dir: str | None = None,
        train_epochs: int | None = None,
        ulira_shadow_pairs: int = 0,
        **overrides: Any,
    ) -> str:
        """Several seeds of original, exact retraining, a second retraining (the noise floor) and every strategy,
        evaluated and aggregated as mean ± std; re-running the same command resumes where it stopped.

        The first forget fraction is the headline; ``--train_epochs`` sets the original and retrained models' epochs;
        ``--ulira_shadow_pairs K`` (K >= 2) adds U-LiRA AUCs, the noise floor's included, on the headline fraction.
        """
        result = studies.run_protocol(
            bundle,
            _names(strategies) if strategies else None,
            [int(seed) for seed in _names(seeds)],
            [float(fraction) for fraction in _names(forget_fractions)],
            work_dir,
            train_epochs,
            ulira_shadow_pairs,
            **overrides,
        )
        return f"{format_summary(result)}\n\nMLflow run {result.run_id} (workflow=protocol)."

    def difficulty(
        self,
        bundle: str,
        strategies: str | Sequence[str],
        fraction: float = 0.1,
        work_dir: str | None = None,
        **overrides: Any,
    ) -> str:
        """Forget the easiest and the hardest ``fraction`` of subjects (by the original model's loss) and compare
        every strategy's gap to retraining per quantile."""
        rows = studies.run_difficulty_study(bundle, _names(strategies), fraction, work_dir, **overrides)
        return format_table([{"method": f"{row['quantile']}: {row['strategy']}", **row} for row in rows])

    def tune(
        self,
        bundle: str,
        strategy: str,
        n_trials: int = 8,
        seed: int = 0,
        search: Any = None,
        mode: str = tuning.PER_REQUEST,
        tuning_seed: int = tuning.DEFAULT_TUNING_SEED,
        amortise_over: int = tuning.DEFAULT_AMORTISE_OVER,
        **overrides: Any,
    ) -> str:
        """Search a strategy's hyperparameters with Optuna, scoring trials on the validation split only.

        ``--search "{'learning_rate': [0.001, 0.1], 'unlearn_epochs': 2}"`` narrows a range or fixes a value;
        ``--mode per_bundle`` tunes once on a tuning request drawn with ``--tuning_seed`` and amortises the
        cost over ``--amortise_over`` requests; ``--key value`` overrides config keys as for ``run``.
        Prints the trials and the best one.
        """
        result = tuning.tune(bundle, strategy, n_trials, seed, search, mode, tuning_seed, amortise_over, **overrides)
        return tuning.summary(result)

    def demo(
        self,
        output_dir: str = "demo_output",
        forget_fraction: float = 0.1,
        seed: int = 0,
        experiment: str = "tissuemnist-demo",
        strategies: Sequence[str] | None = None,
    ) -> str:
        """Train, retrain exactly, unlearn with every strategy, evaluate all and print the comparison."""
        result = run_demo(output_dir, forget_fraction, seed, experiment, strategies)
        return (
            f"{format_table(result.rows)}\n\nDemo finished in {result.total_seconds:.0f} s. One seed only: differences "
            "of a few points are noise; the several-seed comparison with a noise floor is in "
            "benchmarks/results/classification_protocol.md (`medunlearn protocol` runs it).\n"
            f"Models and their records: {result.models_dir}\n"
            f"Open the runs with: mlflow ui --backend-store-uri {tracking.tracking_uri()}  (experiment '{experiment}')"
        )


def _names(names: str | int | float | Sequence[Any]) -> list[str]:
    """A comma-separated list (``rl,salun``), one value, or fire's tuple as a list of texts."""
    if isinstance(names, str):
        return [name.strip() for name in names.split(",") if name.strip()]
    if isinstance(names, (int, float)):
        return [str(names)]
    return [str(name) for name in names]


def _root_cause(error: BaseException) -> BaseException:
    """The error under monai.bundle's "Failed to evaluate <expression>" wrappers: the reason the user needs.

    Unwrapping stops there, so an error of ours that names the bad file is kept rather than the
    low-level error it was raised from.
    """
    while error.__cause__ is not None and _is_config_wrapper(error):
        error = error.__cause__
    return error


def _is_config_wrapper(error: BaseException) -> bool:
    return type(error) is RuntimeError and str(error).startswith(("Failed to evaluate", "Failed to instantiate"))


def _as_help_request(args: list[str]) -> list[str]:
    """``medunlearn CMD ... --help`` as fire's own help call for CMD, ``CMD -- --help``; other arguments unchanged.

    Without it fire exits 2 after the help of a command with required arguments, and a command that takes
    ``--key value`` overrides (``run``) would read ``--help`` as one and start the workflow.
    """
    head = args[: args.index("--")] if "--" in args else args
    if not any(arg in HELP_FLAGS for arg in head):
        return args
    return [*[arg for arg in head[:1] if not arg.startswith("-")], "--", "--help"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medunlearn`` console script; returns the exit code."""
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        # fire prints what a command returns (the tables).
        fire.Fire(Commands, command=_as_help_request(args), name="medunlearn")
    except fire.core.FireExit as exit_request:
        return int(exit_request.code or 0)
    except Exception as error:  # noqa: BLE001 - the CLI turns every failure into one message and an exit code
        tracking.fail_open_runs()
        cause = _root_cause(error)
        print(f"medunlearn: error: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
