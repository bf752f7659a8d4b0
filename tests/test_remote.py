"""DVC remote storage: push the pipeline's data and checkpoints to a local-directory remote, lose
the cache and the outs, pull them back bit for bit (an S3/GCS remote differs only in its URL)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import make_project

OUTS = ("data/raw", "data/prepared", "models")

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for out in OUTS for p in sorted((root / out).rglob("*")) if p.is_file()}


def test_dvc_push_pull_round_trip(tmp_path):
    root, env = make_project(tmp_path / "project", ["experiment=tiny", "train.epochs=1", "train.milestones=[1]",
                                                    "tracking.log_model=false"])
    run(["dvc", "repro", "train"], root, env)
    before = digests(root)
    assert "models/model.pt" in before and any(k.startswith("data/prepared/train/shard-") for k in before)

    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], root, env)
    run(["dvc", "push", "--with-deps", "train"], root, env)
    assert any(p.is_file() for p in remote.rglob("*"))

    shutil.rmtree(root / ".dvc/cache")
    for out in OUTS:
        shutil.rmtree(root / out)
    run(["dvc", "pull", "--with-deps", "train"], root, env)
    assert digests(root) == before
    status = run(["dvc", "status", "train", "--with-deps"], root, env)
    assert "changed" not in status and "deleted" not in status, status
