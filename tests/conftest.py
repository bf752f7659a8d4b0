"""Shared fixtures. ``pytest --skip-slow`` (or ``-m 'not slow'``) skips the end-to-end tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--skip-slow", action="store_true", help="skip tests marked slow (end-to-end)")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--skip-slow"):
        return
    skip = pytest.mark.skip(reason="--skip-slow given")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def repo() -> Path:
    return REPO


def clean_env() -> dict:
    """This process's environment without MLflow/DVC/parent-run settings, with this venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "ZFNET_PARENT"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def make_project(dest: Path, overrides: list[str] | None = None) -> tuple[Path, dict]:
    """A git copy of the project's files (tracked and untracked, not ignored) in ``dest``, with
    ``params.yaml`` composed for the Hydra ``overrides`` (None: as committed); returns it and :func:`clean_env`."""
    from zfnet.bench.repro import copy_project

    copy_project(REPO, dest, overrides)
    return dest, clean_env()
