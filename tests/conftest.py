"""Shared test set-up: MLflow and the hashing salt stay inside each test's temporary folder."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def isolated_workdir(tmp_path, monkeypatch):
    """Run every test in its own folder with its own MLflow store and salt."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MEDUNLEARN_SALT", "test-salt")
    return tmp_path
