"""The bundles' shared workflow wiring has one source (``bundles/shared_blocks.json``) and no copy drifts from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medunlearn_monai import bundle_blocks
from medunlearn_monai.workflows import BUNDLES_DIR, project_bundles

BUNDLES = ["chexpert_resnet_classification", "mrbrains18_med3d_segmentation", "tissuemnist_resnet_classification"]


def test_every_project_bundle_is_checked() -> None:
    assert [path.name for path in project_bundles()] == BUNDLES


def test_the_source_covers_each_workflow_file() -> None:
    blocks = bundle_blocks.shared_blocks()
    workflow_files = {"common.json", "train.json", "unlearn.json", "evaluate.json", "inference.json"}
    workflow_files |= {"sisa.json", "sisa_unlearn.json", "sisa_evaluate.json"}
    workflow_files |= {"multi_gpu_train.json", "multi_gpu_unlearn.json"}
    assert set(blocks) == workflow_files
    assert {"initial_handlers", "strategy_handlers", "optimizer", "initialize", "run"} <= set(blocks["train.json"])


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_copy_matches_the_source(bundle: str) -> None:
    assert bundle_blocks.drifted_blocks(BUNDLES_DIR / bundle) == []


def test_a_drifted_or_missing_block_is_named(tmp_path: Path) -> None:
    source = json.loads(bundle_blocks.SHARED_BLOCKS_FILE.read_text())
    source["files"]["train.json"]["checkpoint_interval"] = 999
    source["files"]["unlearn.json"]["a_block_no_bundle_has"] = "@trainer"
    edited = tmp_path / "shared_blocks.json"
    edited.write_text(json.dumps(source))
    drifted = bundle_blocks.drifted_blocks(BUNDLES_DIR / BUNDLES[0], source=edited)
    assert drifted == ["configs/train.json: checkpoint_interval", "configs/unlearn.json: a_block_no_bundle_has"]


def test_the_command_passes_on_the_project(capsys: pytest.CaptureFixture[str]) -> None:
    assert bundle_blocks.main([]) == 0
    assert capsys.readouterr().out == ""
