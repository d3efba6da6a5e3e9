"""A guest bundle's train / unlearn / evaluate workflows: its own configs, then our overlays, run by ``monai.bundle``.

The config list of a workflow is the guest's training configs, the adapter's layout, then, from ``configs/`` here:
``common.json``, the workflow's files (``train.json``; ``train.json`` and ``unlearn.json``; ``evaluate.json``), the
task's file (``tasks/segmentation.json`` or ``tasks/classification.json``) and, to unlearn, the strategy's
(``strategies/<name>.json``). :meth:`GuestRun.command` prints the same run as a ``python -m monai.bundle run``
command line.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import monai.bundle

from medunlearn_monai.guest.adapter import GUEST_PREFIX, GuestAdapter
from medunlearn_monai.guest.bundle import TASKS, GuestBundle
from medunlearn_monai.guest.handlers import left_out_handlers
from medunlearn_monai.workflows import canonical_strategy

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
WORKFLOWS = ("train", "unlearn", "evaluate")
WORKFLOW_FILES = {"train": ("train.json",), "unlearn": ("train.json", "unlearn.json"), "evaluate": ("evaluate.json",)}
# Guest keys our overlays replace on purpose: the run is ours, and so is what ends it.
REPLACED_GUEST_KEYS = ("run", "finalize")
logger = logging.getLogger(__name__)


def strategies() -> list[str]:
    """Names of the strategies a guest can be unlearned with (``configs/strategies/<name>.json``)."""
    return sorted(path.stem for path in (CONFIGS_DIR / "strategies").glob("*.json"))


@dataclass(frozen=True)
class GuestRun:
    """One workflow of a guest bundle, ready to run: its config list and overrides.

    Args:
        bundle: the guest bundle.
        adapter: how the overlays read and write its config.
        task: ``segmentation`` or ``classification``.
        workflow: ``train``, ``unlearn`` or ``evaluate``.
        strategy: the unlearning strategy (unlearn only).
        overrides: config keys set on top of the list (``bundle_root``, left-out guest handlers, the caller's).
    """

    bundle: GuestBundle
    adapter: GuestAdapter
    task: str
    workflow: str
    strategy: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def config_files(self) -> list[str]:
        """The config list, guest's files first."""
        files = [*self.bundle.config_files, self.adapter.layout, CONFIGS_DIR / "common.json"]
        files += [CONFIGS_DIR / name for name in WORKFLOW_FILES[self.workflow]]
        files.append(CONFIGS_DIR / "tasks" / f"{self.task}.json")
        if self.strategy:
            files.append(CONFIGS_DIR / "strategies" / f"{self.strategy}.json")
        return [str(path) for path in files]

    def shadowed_keys(self, config: monai.bundle.ConfigParser) -> list[str]:
        """Top-level keys of the guest's ``config`` that our overlays also set, beyond :data:`REPLACED_GUEST_KEYS`:
        the guest's own uses of them get our values."""
        ours: set[str] = set()
        for path in self.config_files()[len(self.bundle.config_files) :]:
            keys = monai.bundle.ConfigParser.load_config_file(path)
            ours |= {key for key in keys if "#" not in key and not key.startswith(("+", GUEST_PREFIX))}
        return sorted((ours - set(REPLACED_GUEST_KEYS)) & set(config.get()))

    def parser(self) -> monai.bundle.ConfigParser:
        """The merged config with the overrides, not parsed."""
        parser = monai.bundle.ConfigParser()
        parser.read_config(self.config_files())
        parser.update(self.overrides)
        return parser

    def run(self) -> None:
        """Run the workflow in this process, as :meth:`command` would."""
        optional = {"meta_file": self.bundle.metadata, "logging_file": self.bundle.logging}
        monai.bundle.run(
            config_file=self.config_files(),
            **{name: str(path) for name, path in optional.items() if path},
            **self.overrides,
        )

    def command(self) -> str:
        """The ``python -m monai.bundle run`` command line of this run."""
        files = "[" + ",".join(repr(path) for path in self.config_files()) + "]"
        words = ["python", "-m", "monai.bundle", "run", "--config_file", files]
        for name, path in (("--meta_file", self.bundle.metadata), ("--logging_file", self.bundle.logging)):
            words += [name, str(path)] if path else []
        for key, value in self.overrides.items():
            words += [f"--{key}", os.fspath(value) if isinstance(value, (str, os.PathLike)) else repr(value)]
        return " ".join(_quote(word) for word in words)


def _quote(word: str) -> str:
    """``word`` for a POSIX shell; a Python list of quoted paths goes in double quotes, as MONAI's docs write it."""
    if "'" in word and not any(character in word for character in '"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)


def plan(
    bundle: str | os.PathLike,
    workflow: str,
    strategy: str | None = None,
    layout: str | os.PathLike | None = None,
    task: str | None = None,
    items_key: str | None = None,
    test_items_key: str | None = None,
    guest_configs: Sequence[str] | None = None,
    **overrides: Any,
) -> GuestRun:
    """A workflow of the guest bundle in folder ``bundle``, checked against its config before anything runs.

    Args:
        bundle: the guest bundle's folder.
        workflow: ``train`` (exact retraining with a forget request), ``unlearn`` or ``evaluate``.
        strategy: one of :func:`strategies` (or an alias of one), for ``unlearn``.
        layout: a shipped layout's name or a layout file; None chooses by the guest's keys.
        task: ``segmentation`` or ``classification``; None reads it from the guest's metadata.
        items_key: the guest key of the training items, instead of the layout's.
        test_items_key: the guest key of the test items, instead of the layout's.
        guest_configs: the guest's training config files in ``configs/`` (default ``train.json`` or ``.yaml``).
        **overrides: config keys to set, as ``--key value`` does (``forget_request_file``, ``subject_key``, the guest's
            own keys, ...).

    Raises:
        ValueError: for an unknown workflow, task or strategy, or a strategy outside ``unlearn``.
        GuestBundleError: when the folder is not a bundle with a training config.
        GuestKeyError: when the guest's config lacks a key the adapter reads or writes into.
    """
    if workflow not in WORKFLOWS:
        raise ValueError(f"unknown workflow '{workflow}'; choose one of {', '.join(WORKFLOWS)}.")
    strategy = canonical_strategy(strategy)
    if workflow == "unlearn" and strategy not in strategies():
        raise ValueError(f"unlearn needs --strategy, one of {', '.join(strategies())}; got {strategy!r}.")
    if workflow != "unlearn" and strategy is not None:
        raise ValueError(f"--strategy applies to unlearn only, not to {workflow}.")
    if task is not None and task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {task!r}.")
    guest = GuestBundle.open(bundle, guest_configs)
    config = guest.config()
    adapter = GuestAdapter.for_config(config, layout, items_key, test_items_key)
    adapter.check(config)
    settings = {
        "bundle_root": str(guest.root),
        **adapter.overrides(),
        **left_out_handlers(config, adapter.handler_lists()),
        **overrides,
    }
    run = GuestRun(guest, adapter, task or guest.task(), workflow, strategy, settings)
    shadowed = run.shadowed_keys(config)
    if shadowed:
        logger.warning(
            "The bundle's keys %s are also set by our overlays: its uses of them get ours.", ", ".join(shadowed)
        )
    return run
