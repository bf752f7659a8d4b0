"""DVC's own views of the committed results, in a git copy of the project: `dvc metrics show`, one
stage's metrics file, and the README's `dvc exp show --keep` line, measured in characters."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, make_project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    return make_project(tmp_path_factory.mktemp("views") / "project")


def shown(argv: list[str], root: Path, env: dict) -> list[str]:
    """The lines a DVC command prints on a terminal as wide as it likes."""
    proc = subprocess.run(argv, cwd=root, env={**env, "COLUMNS": "100000"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()


def test_the_headline_metrics_are_the_top_level_ones():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert dvc["metrics"] == ["metrics/train.json", "metrics/report.json"]


def test_dvc_metrics_show_fits_in_200_columns(project):
    lines = shown(["dvc", "metrics", "show"], *project)
    assert max(map(len, lines)) <= 200, max(map(len, lines))


def test_each_stages_metrics_file_is_one_command_away(project):
    for name, key in (("metrics/analyze.json", "pointing_game"), ("metrics/ablate/krizhevsky.json", "val_top1_error_mean")):
        lines = shown(["dvc", "metrics", "show", name], *project)
        assert key in lines[0] and lines[1].startswith(name)


def test_the_readmes_exp_show_line_is_readable(project):
    line = next(x for x in (REPO / "README.md").read_text().splitlines() if x.startswith("dvc exp show --drop"))
    lines = shown([*shlex.split(line), "--no-pager"], *project)
    assert max(map(len, lines)) <= 170, max(map(len, lines))
    header = re.split(r"\s{2,}", lines[1].strip())
    assert header[:2] == ["Experiment", "Created"] and "model.arch" in header and "claims_hold" in header
    assert [h.split(":")[-1] for h in header[2:4]] == ["val_top1_error", "val_top5_error"]  # train.json's
