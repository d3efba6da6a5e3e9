"""Sharded, isolated, sliced training (SISA, Bourtoule et al., IEEE S&P 2021) on stock MONAI trainers.

Each shard model trains in stages: stage ``r`` trains on slices ``0..r`` of its shard for ``epochs_per_slice``
epochs, starting from the checkpoint of stage ``r - 1``, and leaves a checkpoint of its own. Every stage is a
MONAI ``SupervisedTrainer`` with a fresh optimizer of the bundle's class and settings, a cosine learning-rate
schedule over the stage, and a seed of its own, so a stage's result depends only on its starting weights and its
items. Unlearning therefore retrains a shard from the first slice whose items changed and reuses everything
before it; the shards a request does not touch are reused whole. The result equals, bit for bit on a
deterministic device, sharded training from scratch without the forgotten subjects.

Folder of a sharded model ``models/sisa.pt``: ``models/sisa.shards/`` with ``initial.pt`` (the weights every shard
starts from), ``shard_<k>/slice_<r>.pt`` (weights after stage ``r``, 1-based), ``shard_<k>/shard.json`` (the slices'
digests and the checkpoints' SHA-256) and ``manifest.json``. A run with ``shard_ids`` trains only those shards (one
job per shard can run in parallel); a later run without it finds their checkpoints current and only assembles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.handlers import ProgressBar
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.handlers import LrScheduleHandler
from monai.utils import set_determinism
from torch import nn
from torch.utils.data import Dataset, Subset

from medunlearn_monai.certificate.issue import CertificateWriter
from medunlearn_monai.identities import item_identity
from medunlearn_monai.model_io import save_weights
from medunlearn_monai.precision import AutocastInferer
from medunlearn_monai.records import file_sha256, read_json, record_path, write_json
from medunlearn_monai.safe_loading import load_weights
from medunlearn_monai.sisa.ensemble import ShardEnsemble
from medunlearn_monai.sisa.plan import ShardPlan, shard_dir, stage_indices
from medunlearn_monai.tracking import MLflowTracker

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"
SHARD_RECORD = "shard.json"
INITIAL_WEIGHTS = "initial.pt"


class ShardedTrainingError(ValueError):
    """A sharded model that cannot be trained or unlearned as asked."""


class ShardedTraining:
    """Train (or unlearn from) a sharded model and write the ensemble, its manifest, record and certificate.

    Args:
        ensemble: the shard models; its ``members`` are trained, its outputs averaged (see :class:`ShardEnsemble`).
        plan: the subject-to-shard-and-slice rule.
        dataset: the bundle's training dataset (pre-processing included) over ``items``.
        items: the training items (retained items when a forget request applies).
        optimizer: the bundle's optimizer; each stage gets a new one of its class and settings.
        loss_function: the bundle's loss.
        inferer: the bundle's training inferer (mixed precision, the bundle's ``amp``, comes with it).
        batch_size: items per batch (smaller for a stage with fewer items).
        epochs_per_slice: epochs of each stage.
        device: where to train.
        output_model: the ensemble file to write; its checkpoints go to ``<output>.shards/``.
        record: what to store about the run beside the model (workflow, strategy, hyperparameters, ...).
        salt: the deployment's salt (slice digests use salted item identities).
        dataset_dir: root of the item keys (see :mod:`medunlearn_monai.certificate`).
        source_model: a sharded model to unlearn from: its current checkpoints are reused, never modified.
        shard_ids: train only these shards (a parallel job); None trains every shard not already current.
        num_workers: data loader workers.
        validator: evaluator of the assembled ensemble (the bundle's validation), run once at the end.
        certificate: the erasure certificate writer of a forget request; records every stage's batches and the
            items of reused checkpoints, and gets the retrained shards.
        tracker: the run's MLflow run.
        seconds_metric: metric name of the wall time (``train_seconds`` or ``unlearn_seconds``).

    Raises:
        ShardedTrainingError: when ``source_model`` has no shard folder, or was trained with other settings.
        ValueError: for an empty shard (see :meth:`ShardPlan.slice_indices`) or a bad shard id.
    """

    def __init__(
        self,
        ensemble: ShardEnsemble,
        plan: ShardPlan,
        dataset: Dataset,
        items: Sequence[Mapping[str, Any]],
        optimizer: torch.optim.Optimizer,
        loss_function: nn.Module,
        inferer: Any,
        batch_size: int,
        epochs_per_slice: int,
        device: torch.device | str,
        output_model: str | os.PathLike,
        record: Mapping[str, Any],
        salt: bytes,
        dataset_dir: str | os.PathLike,
        source_model: str | os.PathLike | None = None,
        shard_ids: Sequence[int] | None = None,
        num_workers: int = 0,
        validator: Any = None,
        certificate: CertificateWriter | None = None,
        tracker: MLflowTracker | None = None,
        seconds_metric: str = "train_seconds",
    ):
        if len(ensemble.members) != plan.shards:
            raise ValueError(f"the ensemble has {len(ensemble.members)} members for {plan.shards} shards.")
        if epochs_per_slice < 1:
            raise ValueError(f"epochs_per_slice must be at least 1, got {epochs_per_slice}.")
        self.ensemble = ensemble
        self.plan = plan
        self.dataset = dataset
        self.items = items
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.inferer = inferer
        self.batch_size = batch_size
        self.epochs_per_slice = epochs_per_slice
        self.device = device
        self.output_model = Path(output_model)
        self.output_dir = Path(shard_dir(output_model))
        self.record = dict(record)
        self.salt = salt
        self.dataset_dir = str(dataset_dir)
        self.source_model = Path(source_model) if source_model else None
        self.source_dir = Path(shard_dir(source_model)) if source_model else None
        self.shard_ids = self._checked_shard_ids(shard_ids)
        self.num_workers = num_workers
        self.validator = validator
        self.certificate = certificate
        self.tracker = tracker
        self.seconds_metric = seconds_metric
        self._loaded: set[int] = set()
        if self.source_dir is not None and not (self.source_dir / MANIFEST).is_file():
            raise ShardedTrainingError(
                f"source model {source_model} has no shard manifest at {self.source_dir / MANIFEST}: "
                "unlearning by retraining shards needs a model trained with configs/sisa.json."
            )

    def check(self) -> None:
        """Fail before anything is written or logged: no shard may be empty, and a source model must have been trained
        with these settings.

        Raises:
            ValueError: for an empty shard.
            ShardedTrainingError: when the source model was trained with other settings.
        """
        self.plan.slice_indices(self.items)
        if self.source_dir is not None:
            self._settings(read_json(self.source_dir / MANIFEST)["settings"]["initial_sha256"])

    def run(self) -> dict[str, Any]:
        """Train every shard that is not current, then assemble; returns the run's summary."""
        started = time.perf_counter()
        if self.certificate is not None:
            self.certificate.check()
        slices = self.plan.slice_indices(self.items)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        settings = self._settings(self._initial_weights())
        digests = [self.plan.slice_digests(self.items, positions, self.salt, self.dataset_dir) for positions in slices]
        retrained: dict[int, int] = {}
        stages = samples = 0
        for shard in self.shard_ids:
            first_stage, checkpoints = self._reuse(shard, settings, digests[shard])
            if first_stage and self.certificate is not None:
                self._record_reused(stage_indices(slices[shard], first_stage - 1))
            if first_stage < self.plan.slices:
                retrained[shard] = first_stage + 1
            for stage in range(first_stage, self.plan.slices):
                trained, checkpoint_sha256 = self._train_stage(shard, stage, stage_indices(slices[shard], stage))
                samples += trained
                stages += 1
                checkpoints.append(checkpoint_sha256)
            slice_items = [len(positions) for positions in slices[shard]]
            self._write_shard_record(shard, settings, digests[shard], slice_items, checkpoints)
        summary = {
            "shards": self.plan.shards,
            "slices": self.plan.slices,
            "retrained_shards": sorted(retrained),
            "first_retrained_slice": {str(shard): first for shard, first in sorted(retrained.items())},
            "trained_stages": stages,
        }
        pending = [shard for shard in range(self.plan.shards) if not self._current(shard, settings, digests[shard])]
        if pending:
            logger.info("Trained shard(s) %s; shard(s) %s still to train before assembly.", self.shard_ids, pending)
            return summary
        model_sha256 = self._assemble(settings)
        summary["manifest_sha256"] = file_sha256(self.output_dir / MANIFEST)
        seconds = time.perf_counter() - started
        self._write_record(summary, seconds, samples, model_sha256)
        if self.certificate is not None:
            self.certificate.extra["sisa"] = summary
            self.certificate(None)
        if self.tracker is not None:
            self.tracker.log_params({"sisa_retrained_shards": summary["retrained_shards"]})
            self.tracker.log_metrics(
                {
                    self.seconds_metric: seconds,
                    "samples_per_second": samples / max(seconds, 1e-9),
                    "sisa_retrained_shards": len(retrained),
                    "sisa_trained_stages": stages,
                }
            )
        if self.validator is not None:
            self.validator.run()
        return summary

    def _checked_shard_ids(self, shard_ids: Sequence[int] | None) -> list[int]:
        if shard_ids is None:
            return list(range(self.plan.shards))
        wrong = [shard for shard in shard_ids if not isinstance(shard, int) or not 0 <= shard < self.plan.shards]
        if wrong or len(set(shard_ids)) != len(shard_ids):
            raise ValueError(
                f"sisa_shard_ids must be distinct shard numbers 0..{self.plan.shards - 1}, got {shard_ids}."
            )
        return sorted(shard_ids)

    def _initial_weights(self) -> str:
        """Put the weights every shard starts from in the output folder; returns their SHA-256.

        Unlearning takes the source model's, so a shard retrained from its first slice starts where it first did.
        """
        target = self.output_dir / INITIAL_WEIGHTS
        if self.source_dir is not None:
            _link(self.source_dir / INITIAL_WEIGHTS, target)
        else:
            member = self.ensemble.members[0]
            save_weights(target, member.state_dict())
        return file_sha256(target)

    def _settings(self, initial_sha256: str) -> dict[str, Any]:
        """Everything a stage's result depends on besides its starting weights and its items."""
        settings = {
            "plan": self.plan.describe(),
            "epochs_per_slice": self.epochs_per_slice,
            "batch_size": self.batch_size,
            "optimizer": type(self.optimizer).__name__,
            "optimizer_settings": {key: self.optimizer.defaults[key] for key in sorted(self.optimizer.defaults)},
            "loss": type(self.loss_function).__name__,
            "inferer": type(self.inferer).__name__,
            "amp": isinstance(self.inferer, AutocastInferer) and self.inferer.enabled,
            "initial_sha256": initial_sha256,
        }
        settings = json.loads(json.dumps(settings, default=str))
        if self.source_dir is not None:
            source = read_json(self.source_dir / MANIFEST)["settings"]
            differing = sorted(key for key in settings.keys() | source.keys() if settings.get(key) != source.get(key))
            if differing:
                raise ShardedTrainingError(
                    f"source model {self.source_model} was trained with other SISA settings ({', '.join(differing)}): "
                    "unlearning must use the settings it was trained with."
                )
        return settings

    def _reuse(self, shard: int, settings: Mapping[str, Any], digests: Sequence[str]) -> tuple[int, list[str]]:
        """Load the longest valid checkpoint prefix of ``shard`` (own folder, else the source's); returns the first
        stage to train and the kept checkpoints' SHA-256. Checkpoints taken from the source are hard-linked (or
        copied) into the output folder."""
        best, best_folder, kept_sha256 = 0, None, []
        for folder in (self.output_dir, self.source_dir):
            if folder is None:
                continue
            kept, checkpoints = _valid_prefix(folder / f"shard_{shard}", settings, digests)
            if kept > best:
                best, best_folder, kept_sha256 = kept, folder, checkpoints
        target = self.output_dir / f"shard_{shard}"
        if best_folder is not None and best_folder != self.output_dir:
            for stage in range(1, best + 1):
                _link(best_folder / f"shard_{shard}" / f"slice_{stage}.pt", target / f"slice_{stage}.pt")
        start = target / f"slice_{best}.pt" if best else self.output_dir / INITIAL_WEIGHTS
        self.ensemble.members[shard].load_state_dict(load_weights(start, map_location=self.device))
        self._loaded.add(shard)
        return best, kept_sha256

    def _record_reused(self, positions: Sequence[int]) -> None:
        """Tell the certificate which items a reused checkpoint learned: those of its slices, equal by digest."""
        identities = [item_identity(self.items[position], self.salt, self.dataset_dir) for position in positions]
        self.certificate.record(identities, [False] * len(identities))

    def _train_stage(self, shard: int, stage: int, positions: Sequence[int]) -> tuple[int, str]:
        """Train one stage of one shard with a stock SupervisedTrainer and checkpoint it; returns the items seen
        and the checkpoint's SHA-256."""
        member = self.ensemble.members[shard]
        checkpoint = self.output_dir / f"shard_{shard}" / f"slice_{stage + 1}.pt"
        if not positions:  # the shard's first slices can be empty with few subjects: nothing to learn yet
            return 0, save_weights(checkpoint, member.state_dict())
        set_determinism(seed=_stage_seed(self.plan.seed, shard, stage))
        batch_size = min(self.batch_size, len(positions))
        loader = DataLoader(
            Subset(self.dataset, list(positions)),
            batch_size=batch_size,
            shuffle=True,
            # A last batch of one item breaks batch normalisation; only drop it when a full batch remains.
            drop_last=len(positions) > batch_size,
            num_workers=self.num_workers,
        )
        optimizer = type(self.optimizer)(member.parameters(), **self.optimizer.defaults)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs_per_slice)
        progress = ProgressBar(persist=False, desc=f"shard {shard + 1}/{self.plan.shards} slice {stage + 1}")
        trainer = SupervisedTrainer(
            device=self.device,
            max_epochs=self.epochs_per_slice,
            train_data_loader=loader,
            network=member,
            optimizer=optimizer,
            loss_function=self.loss_function,
            inferer=self.inferer,
            train_handlers=[LrScheduleHandler(schedule, print_lr=False), progress],
        )
        if self.certificate is not None:
            self.certificate.watch(trainer)
        trainer.run()
        per_epoch = len(loader) * batch_size if loader.drop_last else len(positions)
        return per_epoch * self.epochs_per_slice, save_weights(checkpoint, member.state_dict())

    def _write_shard_record(
        self,
        shard: int,
        settings: Mapping[str, Any],
        digests: Sequence[str],
        slice_items: Sequence[int],
        checkpoints: Sequence[str],
    ) -> None:
        record = {
            "settings_sha256": _digest(settings),
            "slice_digests": list(digests),
            "slice_items": list(slice_items),
            "checkpoint_sha256": list(checkpoints),
        }
        write_json(self.output_dir / f"shard_{shard}" / SHARD_RECORD, record)

    def _current(self, shard: int, settings: Mapping[str, Any], digests: Sequence[str]) -> bool:
        """Whether ``shard``'s record in the output folder covers all slices of these items under ``settings``."""
        path = self.output_dir / f"shard_{shard}" / SHARD_RECORD
        if not path.is_file():
            return False
        record = read_json(path)
        return record.get("settings_sha256") == _digest(settings) and record.get("slice_digests") == list(digests)

    def _assemble(self, settings: Mapping[str, Any]) -> str:
        """Write the ensemble of every shard's last checkpoint and the manifest; returns the model's SHA-256.

        Shards this run trained or reused are in memory already; those another job trained are loaded and checked.
        """
        shards = []
        for shard, member in enumerate(self.ensemble.members):
            folder = self.output_dir / f"shard_{shard}"
            record = read_json(folder / SHARD_RECORD)
            if shard not in self._loaded:
                last = folder / f"slice_{self.plan.slices}.pt"
                if file_sha256(last) != record["checkpoint_sha256"][-1]:
                    raise ShardedTrainingError(
                        f"checkpoint {last} changed after it was written: retrain shard {shard}."
                    )
                member.load_state_dict(load_weights(last, map_location=self.device))
            shards.append({key: record[key] for key in ("slice_items", "slice_digests", "checkpoint_sha256")})
        model_sha256 = save_weights(self.output_model, self.ensemble.state_dict())
        manifest = {
            "schema_version": 1,
            "settings": dict(settings),
            "items": len(self.items),
            "shards": shards,
            "model_file": self.output_model.name,
            "model_sha256": model_sha256,
        }
        write_json(self.output_dir / MANIFEST, manifest)
        return model_sha256

    def _write_record(self, summary: Mapping[str, Any], seconds: float, samples: int, model_sha256: str) -> None:
        record = {
            **self.record,
            "seconds": seconds,
            "epochs": self.plan.slices * self.epochs_per_slice,
            "samples_per_second": samples / max(seconds, 1e-9),
            "model_sha256": model_sha256,
            "sisa": dict(summary),
        }
        if self.source_model is not None:
            record["source_model_sha256"] = file_sha256(self.source_model)
        write_json(record_path(self.output_model), record)


def _valid_prefix(folder: Path, settings: Mapping[str, Any], digests: Sequence[str]) -> tuple[int, list[str]]:
    """How many leading stages of the shard record in ``folder`` saw the same slices under the same settings, and
    their checkpoints' SHA-256.

    Only the last kept checkpoint, the one training resumes from, is hashed here: earlier ones do not enter the new
    model and are checked when a later request resumes from them. A changed one means nothing is reused.
    """
    path = folder / SHARD_RECORD
    if not path.is_file():
        return 0, []
    record = read_json(path)
    if record.get("settings_sha256") != _digest(settings):
        return 0, []
    kept = 0
    for saved, current in zip(record["slice_digests"], digests, strict=False):
        if saved != current:
            break
        kept += 1
    checkpoints = record["checkpoint_sha256"][:kept]
    resume_from = folder / f"slice_{kept}.pt"
    if kept and (not resume_from.is_file() or file_sha256(resume_from) != checkpoints[-1]):
        logger.warning("Checkpoint %s is missing or changed since it was written: not reused.", resume_from)
        return 0, []
    return kept, checkpoints


def _link(source: Path, target: Path) -> None:
    """Give ``target`` the bytes of ``source`` without touching ``source``: a hard link, else a copy."""
    if source.resolve() == target.resolve():
        return
    if not source.is_file():
        raise ShardedTrainingError(f"checkpoint {source} of the source model is missing.")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # another file system, or links not allowed: copy instead
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _stage_seed(seed: int, shard: int, stage: int) -> int:
    """A seed per (seed, shard, stage), so a stage's random draws do not depend on what ran before it."""
    return int(hashlib.sha256(f"{seed}:{shard}:{stage}".encode()).hexdigest()[:8], 16)


def _digest(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
