"""Test helpers: a bundle copied to a temporary folder with a few ``inference.json`` keys changed, and a random
model saved the way ``ModelWriter`` saves one.

``tests/`` is on ``sys.path`` because ``tests/conftest.py`` is not in a package (pytest's default import mode).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

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
