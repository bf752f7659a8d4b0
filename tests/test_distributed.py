"""Data-parallel training: a real 2-process ``torchrun`` (gloo, CPU) run of the train stage.

With dropout off, two processes on halves of each global batch of 16 follow the same trajectory
as one process on the whole batch; only the order of floating-point sums differs (gloo's
all-reduce, per-slice reductions), so weights agree to TOLERANCE, not bitwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_project, tiny_raw
from zfnet.config import from_dict
from zfnet.data.shards import ShardDataset, load_mean
from zfnet.train.checkpoint import load_checkpoint
from zfnet.train.loop import fit

TOLERANCE = 1e-5  # max |w_ddp - w_single| over all weights after 2 epochs (12 SGD steps); measured 3e-8


def ddp_raw() -> dict:
    # dropout masks are drawn per rank: the one thing that cannot match
    return tiny_raw("model.dropout=0.0", "train.epochs=2", "train.milestones=[1,2]")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_prepared) -> Path:
    return tiny_project(tmp_path_factory.mktemp("ddp"), tiny_prepared, ddp_raw())


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(project, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "zfnet.stages.train"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ddp = load_checkpoint(project / "models/model.pt")
    assert ddp["epoch"] == 2
    assert sorted(p.name for p in (project / "models/milestones").iterdir()) == ["epoch-001.pt", "epoch-002.pt"]

    cfg = from_dict(ddp_raw())
    prepared = project / "data/prepared"
    train, val = ShardDataset(prepared / "train"), ShardDataset(prepared / "val")
    single = fit(cfg, train, val, load_mean(prepared), tmp_path / "state", tmp_path / "out",
                 meta={"classes": train.classes, "class_names": train.class_names}, progress=False)
    weights = single["model"].state_dict()
    diff = max(float((ddp["model"][k] - weights[k]).abs().max()) for k in weights)
    assert diff < TOLERANCE, f"DDP and single-process weights differ by {diff:.2e}"
    first = load_checkpoint(project / "models/milestones/epoch-001.pt")["model"]
    moved = max(float((ddp["model"][k] - first[k]).abs().max()) for k in weights)
    assert moved > 100 * TOLERANCE, f"epoch 2 barely changed the weights ({moved:.2e}): the check proves nothing"
    print(f"DDP vs single process: max |dw| {diff:.2e}; epoch-2 update {moved:.2e}")

    # Rank 0 alone wrote the metrics and the MLflow run: one train run, each epoch logged once.
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["val_top1_error"] == pytest.approx(single["final"]["val_top1_error_10crop"], abs=1e-6)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = [r for r in client.search_runs([client.get_experiment_by_name("zfnet").experiment_id])
            if r.data.tags.get("stage") == "train"]
    assert len(runs) == 1
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_top1_error")] == [1, 2]
