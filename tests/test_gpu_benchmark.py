"""benchmarks/gpu.py: its training step runs on CPU at a tiny size, and without CUDA it measures nothing."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from medunlearn_monai.workflows import PACKAGE_ROOT


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(PACKAGE_ROOT / "benchmarks"))
    return importlib.import_module("gpu")


@pytest.mark.parametrize("amp", [False, True])
def test_the_training_step_of_both_bundle_kinds_runs_on_cpu(gpu, amp):
    classifier = gpu.Case("tiny 2D", "tissuemnist_resnet_classification", {}, (4, 1, 28, 28), gpu.class_indices(8),
                          "images", True)  # fmt: skip
    segmenter = gpu.Case("tiny 3D", "mrbrains18_med3d_segmentation", {"depth": 10}, (2, 3, 16, 16, 8), gpu.label_map,
                         "volumes", False)  # fmt: skip
    for case, channels_last in ((classifier, True), (segmenter, False)):
        row = gpu.run_case(case, amp, channels_last, torch.device("cpu"), steps=1, warmup=1)
        assert row["items_per_second"] > 0 and math.isfinite(row["loss"]) and row["peak_memory_gib"] is None
        assert row["precision"] == ("bf16 autocast" if amp else "fp32")


def test_every_case_builds_its_bundles_network(gpu):
    network, optimizer, loss = gpu.build(gpu.CASES["chexpert"], torch.device("cpu"), channels_last=True)
    assert next(network.parameters()).is_contiguous(memory_format=torch.channels_last)
    assert isinstance(optimizer, torch.optim.SGD) and callable(loss)
    assert [len(gpu.variants(gpu.CASES[name])) for name in ("tissuemnist", "medicalnet")] == [4, 2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without CUDA")
def test_without_cuda_it_says_so_and_writes_nothing(gpu, tmp_path, capsys):
    assert gpu.main(["--results_dir", str(tmp_path)]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
