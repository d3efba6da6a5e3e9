"""A guest bundle on disk: its training config list, metadata and logging config, read and never written."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
TRAIN_CONFIG = "train"
TASKS = ("segmentation", "classification")


class GuestBundleError(ValueError):
    """A folder that cannot be used as a guest bundle as given."""


@dataclass(frozen=True)
class GuestBundle:
    """A MONAI bundle we did not write, by its folder and the configs its training runs from.

    Args:
        root: the bundle folder (it holds ``configs/``).
        config_files: the guest's own config list for training, in order (default ``configs/train.json``, or
            ``.yaml``).
        metadata: ``configs/metadata.json``, or None when the bundle has none.
        logging: ``configs/logging.conf``, or None.
    """

    root: Path
    config_files: tuple[Path, ...]
    metadata: Path | None
    logging: Path | None

    @classmethod
    def open(cls, folder: str | os.PathLike, configs: Sequence[str] | None = None) -> GuestBundle:
        """The bundle in ``folder``; ``configs`` names its training config files in ``configs/`` (default: the one
        ``train.json``, ``train.yaml`` or ``train.yml``).

        Raises:
            GuestBundleError: when the folder, its ``configs/`` folder or a named config file does not exist, or the
                folder has no training config.
        """
        root = Path(folder).resolve()
        if not root.is_dir():
            raise GuestBundleError(f"no bundle folder {folder}.")
        configs_dir = root / "configs"
        if not configs_dir.is_dir():
            raise GuestBundleError(f"{root} has no configs/ folder: it is not a MONAI bundle.")
        if configs:
            files = tuple(configs_dir / name for name in configs)
            missing = [file.name for file in files if not file.is_file()]
            if missing:
                raise GuestBundleError(f"{configs_dir} has no {', '.join(missing)} (--guest_configs).")
        else:
            found = [configs_dir / f"{TRAIN_CONFIG}{suffix}" for suffix in CONFIG_SUFFIXES]
            files = tuple(file for file in found if file.is_file())[:1]
            if not files:
                raise GuestBundleError(
                    f"{configs_dir} has no train.json or train.yaml: unlearning retrains and fine-tunes the bundle, so "
                    "it needs the bundle's training config (name other files with --guest_configs)."
                )
        metadata, logging = configs_dir / "metadata.json", configs_dir / "logging.conf"
        return cls(root, files, metadata if metadata.is_file() else None, logging if logging.is_file() else None)

    def config(self) -> ConfigParser:
        """The guest's training config list, merged and not parsed: nothing is instantiated or evaluated."""
        parser = ConfigParser()
        parser.read_config([str(file) for file in self.config_files])
        return parser

    def task(self) -> str:
        """``segmentation`` or ``classification``, read from ``metadata.json``: the output ``pred``'s ``format``
        (``segmentation``; anything else, e.g. ``classes``, is classification).

        Raises:
            GuestBundleError: when the bundle has no metadata or it does not describe ``pred``.
        """
        pred = self._metadata().get("network_data_format", {}).get("outputs", {}).get("pred")
        if not isinstance(pred, dict) or "format" not in pred:
            raise GuestBundleError(
                f"{self.root.name}'s metadata does not describe its output 'pred': pass --task {' or '.join(TASKS)}."
            )
        return "segmentation" if pred["format"] == "segmentation" else "classification"

    def _metadata(self) -> dict[str, Any]:
        if self.metadata is None:
            return {}
        return json.loads(self.metadata.read_text())
