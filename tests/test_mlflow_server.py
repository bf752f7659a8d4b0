"""The train stage against a real `mlflow server` (SQLite backend, proxied artifacts) on localhost,
and a dead tracking URI failing the stage at its start with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, mlflow_server, tiny_project, tiny_raw


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_prepared) -> Path:
    """A folder with the tiny profile's prepared data and a 1-epoch params.yaml."""
    return tiny_project(tmp_path_factory.mktemp("server"), tiny_prepared, tiny_raw("train.epochs=1", "train.milestones=[1]"))


def train_stage(root: Path, uri: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))},
           "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "zfnet.stages.train"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def api(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_unreachable_tracking_server_fails_fast_with_one_line(project):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    proc = train_stage(project, uri)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"zfnet train: error: MLflow tracking store '{uri}' is not usable: ")
    assert "Traceback" not in proc.stderr
    assert seconds < 60, f"took {seconds:.0f}s to give up"
    assert not (project / "models/model.pt").exists()


@pytest.mark.slow
def test_train_stage_logs_to_a_tracking_server(project, tmp_path):
    with mlflow_server(tmp_path / "mlflow.db", tmp_path / "artifacts") as base:
        proc = train_stage(project, base)
        assert proc.returncode == 0, proc.stderr[-3000:]

        exp = api(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=zfnet")["experiment"]
        runs = api(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        train = [r for r, t in zip(runs, tags) if t.get("stage") == "train"]
        parents = [r for r, t in zip(runs, tags) if t.get("zfnet.role") == "pipeline"]
        assert len(train) == 1 and len(parents) == 1
        run = train[0]
        assert run["info"]["status"] == "FINISHED"
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert {"val_top1_error", "train_loss", "final_val_top1_error"} <= metrics
        files = api(base, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")["files"]
        assert "params.yaml" in {f["path"] for f in files}
        assert (tmp_path / "artifacts").is_dir()  # artifacts went through the server, not to a local path
