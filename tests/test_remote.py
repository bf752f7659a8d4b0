"""DVC remote storage: push the pipeline's data and checkpoints to a local-directory remote, lose
the cache and the outs, pull them back bit for bit (an S3/GCS remote differs only in its URL)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
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
    root = tmp_path / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # another process's scratch file, gone meanwhile
                shutil.copy2(REPO / f, root / f)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(root / "params.yaml", str(root / "conf"), None, "config", "",
                     ["experiment=tiny", "train.epochs=1", "train.milestones=[1]", "tracking.log_model=false"])
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        run(cmd, root, env)
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
