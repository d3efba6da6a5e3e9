"""Which config files make up each workflow of a bundle, and running them through ``monai.bundle``."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import monai.bundle

from medunlearn_monai import tracking

WORKFLOWS = ("train", "unlearn", "evaluate", "inference")
MULTI_GPU_WORKFLOWS = ("train", "unlearn")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
BUNDLES_DIR = PACKAGE_ROOT / "bundles"
SHARDED = "sisa"
# Other names of one algorithm -> the name every bundle ships it under (and every run logs). The MRBrainS18 source
# paper calls NegGrad+ (descend the retain loss, ascend the forget loss) "Max Loss".
STRATEGY_ALIASES = {"max_loss": "neggrad_plus"}
logger = logging.getLogger(__name__)


def project_bundles() -> list[Path]:
    """The project's bundle folders (``bundles/<name>`` with a ``configs/`` folder), sorted by name."""
    return sorted(path for path in BUNDLES_DIR.iterdir() if (path / "configs").is_dir())


def bundle_dir(bundle: str | os.PathLike) -> Path:
    """A bundle folder given as a path or by the name of one of the project's bundles.

    Raises:
        FileNotFoundError: when neither exists.
    """
    for candidate in (Path(bundle), BUNDLES_DIR / str(bundle)):
        if (candidate / "configs" / "metadata.json").is_file():
            return candidate
    known = [path.name for path in project_bundles()]
    raise FileNotFoundError(f"no bundle '{bundle}': give a bundle folder or one of {', '.join(known)}.")


def canonical_strategy(strategy: str | None) -> str | None:
    """The shipped name of ``strategy``; an alias (:data:`STRATEGY_ALIASES`) is resolved with a log line."""
    if strategy in STRATEGY_ALIASES:
        logger.info("Strategy '%s' is another name for '%s': running and logging '%s'.", strategy,
                    STRATEGY_ALIASES[strategy], STRATEGY_ALIASES[strategy])  # fmt: skip
        return STRATEGY_ALIASES[strategy]
    return strategy


def strategies(bundle: str | os.PathLike) -> list[str]:
    """Names of the unlearning strategies a bundle ships (``configs/strategies/<name>.json``)."""
    return sorted(path.stem for path in (bundle_dir(bundle) / "configs" / "strategies").glob("*.json"))


def config_files(
    bundle: str | os.PathLike, workflow: str, strategy: str | None = None, multi_gpu: bool = False
) -> list[str]:
    """The config list of ``workflow``: shared keys first, then the workflow's small overrides.

    Strategy ``sisa`` (sharded training, ``configs/sisa.json``) applies to train, unlearn and evaluate: its
    unlearning retrains the shards that held a forgotten subject, and its evaluation measures the gap to its exact
    counterpart, the sharded retraining ``sisa_retrained.pt`` (``configs/sisa_evaluate.json``).

    With ``multi_gpu`` the list ends with ``configs/multi_gpu_<workflow>.json`` (train and unlearn), which runs the
    workflow in every process torchrun starts, one per GPU (or CPU processes with gloo), e.g. from a bundle folder::

        torchrun --nproc_per_node=2 -m monai.bundle run --config_file \
            "['configs/common.json','configs/train.json','configs/multi_gpu_train.json']" \
            --meta_file configs/metadata.json --logging_file configs/logging.conf

    An alias of a strategy (:data:`STRATEGY_ALIASES`, e.g. ``max_loss``) selects the strategy it names.

    Raises:
        ValueError: for an unknown workflow or strategy, a strategy given outside ``unlearn``, or ``multi_gpu``
            for another workflow or for ``sisa``.
    """
    configs = bundle_dir(bundle) / "configs"
    strategy = canonical_strategy(strategy)
    if workflow not in WORKFLOWS:
        raise ValueError(f"unknown workflow '{workflow}'; choose one of {', '.join(WORKFLOWS)}.")
    if multi_gpu and workflow not in MULTI_GPU_WORKFLOWS:
        raise ValueError(f"multi_gpu applies to {' and '.join(MULTI_GPU_WORKFLOWS)}, not to {workflow}.")
    if multi_gpu and strategy == SHARDED:
        raise ValueError("multi_gpu does not apply to sisa: its shards train in their own loop, one job per shard.")
    if workflow == "inference":
        return [str(configs / "inference.json")]
    files = [configs / "common.json", configs / "train.json"]
    if strategy == SHARDED:
        files.append(configs / "sisa.json")
        overrides = {"unlearn": ["sisa_unlearn.json"], "evaluate": ["evaluate.json", "sisa_evaluate.json"]}
        files += [configs / name for name in overrides.get(workflow, [])]
    elif workflow == "unlearn":
        available = strategies(bundle)
        if strategy not in available:
            raise ValueError(f"unlearn needs --strategy, one of {', '.join([*available, SHARDED])}; got {strategy!r}.")
        files += [configs / "unlearn.json", configs / "strategies" / f"{strategy}.json"]
    elif strategy is not None:
        raise ValueError(f"--strategy applies to unlearn only, not to {workflow}.")
    elif workflow == "evaluate":
        files.append(configs / "evaluate.json")
    if multi_gpu:
        files.append(configs / f"multi_gpu_{workflow}.json")
    return [str(path) for path in files]


def run_workflow(
    bundle: str | os.PathLike, workflow: str, strategy: str | None = None, multi_gpu: bool = False, **overrides: Any
) -> None:
    """Run one workflow of a bundle in this process, exactly as ``python -m monai.bundle run`` would.

    With ``multi_gpu`` this process is one rank of the group torchrun started (``config_files`` shows the command);
    without torchrun it is a group of one.

    MONAI warns on every run that a config's ``$`` expressions are evaluated; that holds for a bundle from
    elsewhere, so the warning stays for those and is silenced for the bundles shipped in this package.
    """
    root = bundle_dir(bundle)
    configs = root / "configs"
    overrides.setdefault("bundle_root", str(root))
    with warnings.catch_warnings():
        if root.resolve().parent == BUNDLES_DIR.resolve():
            warnings.filterwarnings("ignore", message="parsing config_file", category=UserWarning)
        monai.bundle.run(
            config_file=config_files(root, workflow, strategy, multi_gpu),
            meta_file=str(configs / "metadata.json"),
            logging_file=str(configs / "logging.conf"),
            **overrides,
        )


def config_value(
    bundle: str | os.PathLike, key: str, workflow: str = "train", strategy: str | None = None, **overrides: Any
) -> Any:
    """The parsed value of one config key of a workflow, with ``overrides`` applied as ``run_workflow`` would.

    Raises:
        KeyError: when the workflow's config has no ``key``.
    """
    root = bundle_dir(bundle)
    parser = monai.bundle.ConfigParser()
    parser.read_config(config_files(root, workflow, strategy))
    parser.update({"bundle_root": str(root), **overrides})
    return parser.get_parsed_content(key)


def child_run_overrides(parent_run_id: str, **tags: str) -> dict[str, Any]:
    """Overrides that make a workflow's MLflow run a child of ``parent_run_id`` (nested in the MLflow UI)."""
    return {"tracker#tags": {tracking.PARENT_RUN_TAG: parent_run_id, **tags}}
