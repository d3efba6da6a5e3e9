"""U-LiRA study: shadow pairs of (unlearned, retrained-without) models and a per-example likelihood-ratio attack.

Population-level attacks (one threshold for all items) overestimate how well approximate unlearning
works (Hayes et al. 2024). U-LiRA fits, for every forget example, how its confidence is distributed
under models that unlearned it and under models that never saw it, from K shadow pairs trained with
other seeds on the same data and request; the attack then tells the real unlearned model's forget
examples from the real retrained model's. An attack AUC of 0.5 means the unlearned model cannot be
told from exact retraining; 1.0 means every forget example gives it away.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medunlearn_monai.metrics.ulira import ulira_auc, ulira_scores
from medunlearn_monai.studies._runs import REQUEST_KEYS, ChildWorkflows, StudyError, split_scores, study_run
from medunlearn_monai.workflows import config_value


def run_ulira_study(
    bundle: str,
    strategies: Sequence[str],
    shadow_pairs: int = 2,
    work_dir: str | Path | None = None,
    **overrides: Any,
) -> dict[str, float]:
    """Train ``shadow_pairs`` shadow pairs per strategy and score the bundle's target models with U-LiRA.

    The targets are the retrained model and ``unlearned_<strategy>.pt`` in ``model_dir``, each already
    evaluated with the forget request (their ``.items.json``). Shadow pair k trains an original model, a
    retrained-without model and every strategy's unlearned model with ``seed + k`` (initialisation and
    data order) while the data split and the request stay those of ``seed`` (``data_seed``).

    Args:
        bundle: a bundle name or folder.
        strategies: the unlearning strategies to attack.
        shadow_pairs: K; 2-4 run on a CPU, 16 or more is meant for a GPU.
        work_dir: where shadow models go (default ``<model_dir>/ulira_shadows``).
        **overrides: the bundle overrides the targets were made with (dataset_dir, model_dir, forget request,
            experiment_name, seed, ...).

    Returns:
        ``ulira_auc_<strategy>`` for every strategy, ``ulira_seconds`` and ``ulira_shadow_pairs``.

    Raises:
        StudyError: for fewer than 2 shadow pairs, no strategy, no forget request, or a target not yet evaluated.
    """
    if shadow_pairs < 2:
        raise StudyError(f"U-LiRA needs at least 2 shadow pairs to fit a distribution, got {shadow_pairs}.")
    if not strategies:
        raise StudyError("name at least one strategy to attack.")
    if not (overrides.get("forget_request_file") or overrides.get("forget_fraction")):
        raise StudyError(
            "U-LiRA needs the forget request of the target models: --forget_request_file or --forget_fraction."
        )
    model_dir = Path(config_value(bundle, "model_dir", **overrides))
    retrained_target = split_scores(model_dir / "retrained.pt", "forget")
    forget_subjects = retrained_target["subject_sha256"]
    for name in strategies:  # every target must be evaluated before any shadow model is trained
        split_scores(model_dir / f"unlearned_{name}.pt", "forget", forget_subjects)
    work_dir = Path(work_dir or model_dir / "ulira_shadows")
    seed = int(overrides.get("seed", 0))
    params = {"strategies": ",".join(strategies), "shadow_pairs": shadow_pairs, "forget_items": len(forget_subjects)}
    started = time.perf_counter()
    with study_run(bundle, "ulira", overrides, params) as tracker:
        steps = shadow_pairs * (3 + 2 * len(strategies))
        request = {key: value for key, value in overrides.items() if key in REQUEST_KEYS}
        base = {key: value for key, value in overrides.items() if key not in REQUEST_KEYS}
        children = ChildWorkflows(bundle, tracker, {**base, "data_seed": seed}, steps)
        for pair in range(1, shadow_pairs + 1):
            _train_shadow_pair(children, pair, seed + pair, work_dir / f"pair_{pair}", strategies, request)
        shadows = [work_dir / f"pair_{pair}" for pair in range(1, shadow_pairs + 1)]
        results = ulira_aucs(model_dir, shadows, strategies)
        results["ulira_seconds"] = time.perf_counter() - started
        results["ulira_shadow_pairs"] = float(shadow_pairs)
        tracker.log_metrics(results)
    return results


def _train_shadow_pair(
    children: ChildWorkflows,
    pair: int,
    seed: int,
    model_dir: Path,
    strategies: Sequence[str],
    request: dict[str, Any],
) -> None:
    """Original, retrained-without and unlearned models of one shadow pair, each evaluated on the request."""
    shared = {"seed": seed, "model_dir": str(model_dir)}
    children.run(f"shadow pair {pair}: train the original", "train", **shared)
    children.run(f"shadow pair {pair}: retrain without the forget set", "train", **shared, **request)
    for name in strategies:
        children.run(f"shadow pair {pair}: unlearn with {name}", "unlearn", name, **shared, **request)
    for model in ["retrained", *(f"unlearned_{name}" for name in strategies)]:
        model_path = str(model_dir / f"{model}.pt")
        children.run(f"shadow pair {pair}: evaluate {model}", "evaluate", **shared, **request, model_path=model_path)


def ulira_aucs(
    target_dir: Path,
    shadow_dirs: Sequence[Path],
    strategies: Sequence[str],
    model_files: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """``ulira_auc_<strategy>`` of the evaluated target models in ``target_dir`` against trained shadow pairs.

    Each folder holds ``retrained.pt`` and, per strategy, ``unlearned_<strategy>.pt`` (or the file named in
    ``model_files``) with their per-item scores.

    Raises:
        StudyError: when a model was not evaluated or was evaluated on other forget items.
    """
    model_files = model_files or {}
    retrained_target = split_scores(target_dir / "retrained.pt", "forget")
    forget_subjects = retrained_target["subject_sha256"]
    retrained_shadows = _confidences(shadow_dirs, "retrained.pt", forget_subjects)
    results = {}
    for name in strategies:
        model_file = model_files.get(name, f"unlearned_{name}.pt")
        target = split_scores(target_dir / model_file, "forget", forget_subjects)
        unlearned_shadows = _confidences(shadow_dirs, model_file, forget_subjects)
        unlearned_scores = ulira_scores(np.asarray(target["confidence"]), unlearned_shadows, retrained_shadows)
        retrained_scores = ulira_scores(
            np.asarray(retrained_target["confidence"]), unlearned_shadows, retrained_shadows
        )
        results[f"ulira_auc_{name}"] = ulira_auc(unlearned_scores, retrained_scores)
    return results


def _confidences(shadow_dirs: Sequence[Path], model_name: str, forget_subjects: Sequence[str]) -> np.ndarray:
    """Forget-item confidences of one model role across the shadow pairs, shaped (K, items)."""
    return np.stack(
        [
            np.asarray(split_scores(folder / model_name, "forget", forget_subjects)["confidence"])
            for folder in shadow_dirs
        ]
    )
