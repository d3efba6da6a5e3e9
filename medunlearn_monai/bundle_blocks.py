"""The workflow wiring every bundle repeats word for word, kept in one source: ``bundles/shared_blocks.json``.

Bundles stay self-contained (the model zoo, MONAI Deploy and MONAI Label read one bundle folder), so each keeps its
own copy of the shared blocks (formatted by hand, so it is edited by hand, not rewritten). This module names the copies
that drifted from the source: ``python -m medunlearn_monai.bundle_blocks`` checks every bundle and exits 1 on drift,
and ``tests/bundles/test_shared_blocks.py`` runs the same check in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from medunlearn_monai.workflows import BUNDLES_DIR, project_bundles

SHARED_BLOCKS_FILE = BUNDLES_DIR / "shared_blocks.json"


def shared_blocks(source: Path = SHARED_BLOCKS_FILE) -> dict[str, dict[str, Any]]:
    """Config file name (``train.json``) -> key -> the value every bundle's copy must hold."""
    return json.loads(source.read_text())["files"]


def drifted_blocks(bundle: Path, source: Path = SHARED_BLOCKS_FILE) -> list[str]:
    """``configs/<file>: <key>`` for each shared block that ``bundle`` lacks or holds with another value."""
    drifted = []
    for file_name, blocks in shared_blocks(source).items():
        config = json.loads((bundle / "configs" / file_name).read_text())
        drifted += [
            f"configs/{file_name}: {key}" for key, value in blocks.items() if key not in config or config[key] != value
        ]
    return drifted


def main(argv: list[str] | None = None) -> int:
    """Check every project bundle against the shared blocks; 1 when any copy drifted."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    drifted = [f"{bundle.name}/{entry}" for bundle in project_bundles() for entry in drifted_blocks(bundle)]
    for entry in drifted:
        print(f"{entry} differs from bundles/shared_blocks.json")
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
