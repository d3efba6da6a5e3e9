"""Against a real ``monailabel start_server`` (MONAI Label 0.8.5, deploy/monailabel_app) on 127.0.0.1: the
segmentation bundle is served through MONAI Label's ``BundleInferTask``, and the label map ``/infer`` returns equals
the bundle's own ``inference`` workflow output voxel for voxel.

MONAI Label lives in a venv of its own, ``.venv-label`` (built as deploy/monailabel_app/requirements.txt says);
without it this module is skipped, except in CI
(``CI=true``), where .ci/run builds it and the module must run. The reference label map is computed here, in the
project's venv.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bundle_copies import copy_bundle, load_app_module, write_random_model

from medunlearn_monai.data.synthetic import write_synthetic_mrbrains18
from medunlearn_monai.workflows import PACKAGE_ROOT, run_workflow

LABEL_VENV = PACKAGE_ROOT / ".venv-label"
MONAILABEL = LABEL_VENV / "bin" / "monailabel"
APP_DIR = PACKAGE_ROOT / "deploy" / "monailabel_app"
SEGMENTATION = "mrbrains18_med3d_segmentation"
SPACING = [4.0, 4.0, 6.0]
STARTUP_SECONDS = 180
INFER_SECONDS = 600

REQUIRED = os.environ.get("CI", "").lower() == "true"  # .ci/run builds .venv-label first: in CI this module must run

pytestmark = pytest.mark.skipif(
    not MONAILABEL.is_file() and not REQUIRED,
    reason=f"MONAI Label is not installed in {LABEL_VENV} (build it as deploy/monailabel_app/requirements.txt says)",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _info(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/info/", timeout=2) as response:
            return json.load(response) if response.status == 200 else None
    except OSError:
        return None


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, dict, Path, Path]]:
    """The app with a small random bundle in ``model/``, one synthetic study, the bundle workflow's own label map of
    it, and the server (in its own process group, stopped after the module's tests)."""
    work = tmp_path_factory.mktemp("monailabel")
    app = work / "app"
    shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__", "model", "logs", "lib", "bin"))
    bundle = copy_bundle(SEGMENTATION, app / "model", depth=10, pixdim=SPACING, roi_size=[32, 32, 16])
    write_random_model(bundle, bundle / "models" / "model.pt")
    write_synthetic_mrbrains18(work / "scans", n_subjects=1, spacing=tuple(SPACING), subject_ids=["case-a"])
    (study,) = load_app_module(APP_DIR / "make_studies.py").write_studies(work / "scans", work / "studies")
    run_workflow(bundle, "inference", dataset_dir=str(work / "scans"), output_dir=str(work / "reference"))
    (reference,) = (work / "reference").rglob("*_seg.nii.gz")

    port = _free_port()
    command = [
        str(MONAILABEL), "start_server", "--app", str(app), "--studies", str(work / "studies"),
        "--conf", "models", SEGMENTATION, "--conf", "zoo_source", "local", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    environment = {
        **{key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONHOME")},
        "PATH": f"{LABEL_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "MONAILABEL_PYEXE": str(LABEL_VENV / "bin" / "python"),  # the script runs `python -m monailabel.main`
        "MONAI_LABEL_SESSION_PATH": str(work / "sessions"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    log_path = work / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in the teardown below
    process = subprocess.Popen(command, cwd=work, env=environment, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while (info := _info(url)) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"monailabel start_server did not answer /info/ (exit code {process.poll()}):\n{tail}")
            time.sleep(0.5)
        yield url, info, study, reference
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the group this fixture started: the server and its workers
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def test_server_lists_the_bundle_as_a_segmentation_model(served):
    _, info, _, _ = served
    model = info["models"][SEGMENTATION]
    assert model["type"] == "segmentation" and model["dimension"] == 3
    assert model["labels"] == {"brain tissue": 1}
    assert info["labels"] == ["brain tissue"]
    assert info["datastore"]["total"] == 1


def test_server_segments_a_study_like_the_bundle_workflow(served, tmp_path):
    url, _, study, reference = served
    image_id = study.name.removesuffix(".nii.gz")
    infer = f"{url}/infer/{SEGMENTATION}?image={image_id}&output=image"
    request = urllib.request.Request(infer, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=INFER_SECONDS) as response:
        assert response.status == 200
        written = tmp_path / "label.nii.gz"
        written.write_bytes(response.read())

    ours, theirs = nib.load(written), nib.load(reference)
    labels, expected = np.asarray(ours.dataobj), np.asarray(theirs.dataobj).squeeze()
    assert np.allclose(ours.affine, theirs.affine)
    assert labels.shape == expected.shape == nib.load(study).shape[:3]
    assert np.array_equal(labels, expected)
    assert set(np.unique(expected)) == {0, 1}  # a label map, not a constant volume
