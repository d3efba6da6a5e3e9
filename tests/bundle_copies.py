"""Test helpers: a bundle copied to a temporary folder with a few ``inference.json`` keys changed, a random
model saved the way ``ModelWriter`` saves one, its TorchScript export, and a deploy app's module imported from its
folder.

``tests/`` is on ``sys.path`` because ``tests/conftest.py`` is not in a package (pytest's default import mode).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import types
from pathlib import Path
from typing import Any

import monai.bundle
import torch
from monai.bundle import ConfigParser

from medunlearn_monai.workflows import BUNDLES_DIR


def copy_bundle(name: str, destination: Path, **inference_changes: Any) -> Path:
    """A copy of a bundle (without ``models/``) whose ``inference.json`` has ``inference_changes`` applied."""
    root = destination / name
    shutil.copytree(BUNDLES_DIR / name, root, ignore=shutil.ignore_patterns("models", "__pycache__"))
    inference = root / "configs" / "inference.json"
    inference.write_text(json.dumps({**json.loads(inference.read_text()), **inference_changes}, indent=4))
    return root


def write_random_model(bundle: Path, path: Path) -> torch.nn.Module:
    """Save a random ``network_def`` of the bundle as ``ModelWriter`` does (a plain ``state_dict``)."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def").eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return network


def export_torchscript(bundle: Path) -> Path:
    """``monai.bundle ckpt_export`` of the bundle's ``models/model.pt`` to ``models/model.ts`` (as the README does)."""
    target = bundle / "models" / "model.ts"
    monai.bundle.ckpt_export(
        net_id="network_def",
        filepath=str(target),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
    )
    return target


def load_app_module(path: Path) -> types.ModuleType:
    """A deploy app's module (``deploy/<app>/<name>.py``), imported from its folder as the app itself imports it."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
