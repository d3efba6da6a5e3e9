"""The guest's own handlers that our runs leave out: those that read or write files.

The guest's trainer keeps its handlers (learning-rate schedule, validation, console statistics), but not these:
models are ours to load and write (``SafeCheckpointLoader``, ``ModelWriter``, ``RunCheckpointer``), so that the
erasure certificate knows every weight file involved and nothing lands in the guest's folder; metrics go to our
MLflow run. They are disabled in the config (``<list key>#<position>#_disabled_``), before anything is built: a
``CheckpointSaver`` would create its folder, and a ``TensorBoardStatsHandler`` needs ``tensorboard``, when built.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from monai.bundle import ConfigParser

# MONAI handler class -> why a guest run leaves it out.
LEFT_OUT_HANDLERS = {
    "CheckpointLoader": "would load weights the erasure certificate does not know",
    "CheckpointSaver": "writes model files beside ours (ModelWriter, RunCheckpointer)",
    "TensorBoardStatsHandler": "writes event files; metrics go to the MLflow run",
    "TensorBoardImageHandler": "writes event files",
    "LogfileHandler": "writes a log file",
    "MetricsSaver": "writes metric files; metrics go to the MLflow run",
    "ClassificationSaver": "writes prediction files",
    "MLFlowHandler": "starts MLflow runs of its own beside ours",
    "ClearMLStatsHandler": "logs to ClearML",
    "ClearMLImageHandler": "logs to ClearML",
}


def handler_class(handler: Any) -> str | None:
    """The class name a handler config instantiates (the last part of its ``_target_``), or None."""
    target = handler.get("_target_") if isinstance(handler, dict) else None
    return target.rsplit(".", 1)[-1] if isinstance(target, str) else None


def left_out_handlers(config: ConfigParser, list_keys: Iterable[str]) -> dict[str, bool]:
    """``_disabled_`` overrides for the :data:`LEFT_OUT_HANDLERS` in the guest's handler lists at ``list_keys``.

    A list entry that references a handler defined elsewhere (``"@metriclogger"``) is followed to it.

    Raises:
        ValueError: when a key holds anything but a list of handlers (an expression cannot be filtered).
    """
    overrides = {}
    for list_key in list_keys:
        handlers = config[list_key]
        if not isinstance(handlers, list):
            raise ValueError(
                f"the guest's {list_key} must be a list of handlers for its file-writing ones to be left out, got "
                f"{handlers!r}."
            )
        for position, handler in enumerate(handlers):
            key = f"{list_key}#{position}"
            if isinstance(handler, str) and handler.startswith("@") and handler[1:] in config:
                key, handler = handler[1:], config[handler[1:]]
            if handler_class(handler) in LEFT_OUT_HANDLERS:
                overrides[f"{key}#_disabled_"] = True
    return overrides
