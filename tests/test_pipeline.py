"""End to end: `dvc repro` and `dvc exp run` on the tiny profile in a temporary copy of the repo."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_dvc_repro_end_to_end(tiny_pipeline):
    root, env, _, _ = tiny_pipeline
    dataset = json.loads((root / "data/raw/dataset.json").read_text())
    assert dataset["counts"] == {"train": 96, "val": 32}
    manifest = json.loads((root / "data/prepared/train/manifest.json").read_text())
    assert manifest["count"] == 96 and manifest["size"] == 64
    assert sorted(p.name for p in (root / "models/milestones").iterdir()) == [
        "epoch-001.pt", "epoch-002.pt", "epoch-003.pt"]
    from zfnet.train.checkpoint import load_model

    model, ckpt = load_model(root / "models/model.pt")
    assert ckpt["epoch"] == 3 and model.num_classes == 4
    metrics = json.loads((root / "metrics/train.json").read_text())
    assert {"val_top1_error", "val_top5_error", "train_top1_error"} <= set(metrics)
    assert len((root / "plots/train.csv").read_text().strip().splitlines()) == 1 + 3
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) >= {"data", "preprocess", "train"}

    again = run(["dvc", "repro"], root, env)
    assert "didn't change, skipping" in again.stdout or "up to date" in again.stdout
    assert "Running stage" not in again.stdout

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zfnet")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("zfnet.role") == "pipeline"]
    train = [r for r in runs if r.data.tags.get("stage") == "train"]
    assert len(parents) == 1 and len(train) == 1
    children = [r for r in runs if r.data.tags.get("stage")]
    assert {r.data.tags["stage"] for r in children} >= {"data", "preprocess", "train", "visualize"}
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    run_ = train[0]
    assert run_.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert run_.data.tags["git_commit"] not in ("", "unknown")
    assert run_.data.params["train.epochs"] == "3"
    history = client.get_metric_history(run_.info.run_id, "val_top1_error")
    assert [m.step for m in history] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(run_.info.run_id)}
    assert "params.yaml" in artifacts and "plots" in artifacts
    assert Path(exp.artifact_location.replace("file://", "")).is_relative_to(root)
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert any(m.source_run_id == run_.info.run_id for m in models)


def test_dvc_exp_run_composes_hydra_overrides(tiny_pipeline, tmp_path):
    """On a copy of the reproduced project (the shared one stays as ``dvc repro`` left it)."""
    root = tmp_path / "project"
    shutil.copytree(tiny_pipeline[0], root, symlinks=True)
    env = {**tiny_pipeline[1], "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    run(["dvc", "exp", "run", "-S", "experiment=tiny", "-S", "train.lr=0.02", "-n", "lr002"], root, env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["train"]["lr"] == 0.02 and params["profile"] == "tiny"
    shown = run(["dvc", "exp", "show", "--json"], root, env).stdout
    assert "lr002" in shown
