"""Training: a real tiny run of the loop, determinism, milestones, and resume after kill -9."""

from __future__ import annotations

import argparse
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

import conftest
from zfnet.config import from_dict
from zfnet.data.shards import ShardDataset, load_mean
from zfnet.train.checkpoint import CheckpointError, load_checkpoint, load_model
from zfnet.train.loop import fit


def tiny_raw(epochs: int = 3, milestones=(1, 2, 3)) -> dict:
    return conftest.tiny_raw(f"train.epochs={epochs}", f"train.milestones=[{','.join(map(str, milestones))}]")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_prepared) -> Path:
    """A tiny project folder with the tiny profile's data/prepared."""
    return conftest.tiny_project(tmp_path_factory.mktemp("train"), tiny_prepared)


def run_fit(root: Path, tag: str, raw: dict) -> dict:
    cfg = from_dict(raw)
    prepared = root / "data/prepared"
    train, val = ShardDataset(prepared / "train"), ShardDataset(prepared / "val")
    return fit(cfg, train, val, load_mean(prepared), root / tag / "state", root / tag / "out",
               meta={"classes": train.classes, "class_names": train.class_names}, progress=False)


def test_fit_writes_milestones_and_history(prepared):
    seen = []
    cfg = from_dict(tiny_raw())
    p = prepared / "data/prepared"
    train, val = ShardDataset(p / "train"), ShardDataset(p / "val")
    result = fit(cfg, train, val, load_mean(p), prepared / "a/state", prepared / "a/out",
                 meta={"classes": train.classes, "class_names": train.class_names}, on_epoch=seen.append,
                 progress=False)
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert {"train_loss", "train_top1_error", "val_top1_error", "val_top5_error", "lr"} <= set(seen[0])
    assert "val_top1_error_10crop" not in seen[0] and "val_top1_error_10crop" in seen[2]  # 10 crops: the last epoch
    assert all("val_top1_error" in r for r in seen)  # centre crop: every milestone (and every val_every epochs)
    assert sorted(p.name for p in (prepared / "a/out/milestones").iterdir()) == [
        "epoch-001.pt", "epoch-002.pt", "epoch-003.pt"]
    published, kept = prepared / "a/out/milestones/epoch-001.pt", prepared / "a/state/epoch-001.pt"
    assert published.stat().st_ino == kept.stat().st_ino  # one copy on the disk: a hard link, not a copy
    model, ckpt = load_model(prepared / "a/out/model.pt")
    assert ckpt["epoch"] == 3 and ckpt["classes"] == train.classes and ckpt["mean"].shape == (3, 64, 64)
    assert model(torch.zeros(2, 3, 56, 56)).shape == (2, 4)
    # filter renormalisation holds after training: no conv filter RMS above the radius
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert float(m.weight.detach().pow(2).mean(dim=(1, 2, 3)).sqrt().max()) <= 0.1 + 1e-6
    assert result["final"]["epoch"] == 3


def test_training_is_deterministic_for_a_seed(prepared):
    a = run_fit(prepared, "det1", tiny_raw(epochs=2, milestones=(2,)))["model"].state_dict()
    b = run_fit(prepared, "det2", tiny_raw(epochs=2, milestones=(2,)))["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reader_processes_or_in_line_train_the_same_model(prepared):
    inline = tiny_raw(epochs=1, milestones=(1,))
    ahead = tiny_raw(epochs=1, milestones=(1,))
    inline["train"]["workers"], ahead["train"]["workers"] = 0, 2
    a = run_fit(prepared, "inline", inline)["model"].state_dict()
    b = run_fit(prepared, "ahead", ahead)["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reader_processes_run_only_where_they_can_overlap(monkeypatch):
    from zfnet.train.runtime import reader_workers

    assert reader_workers(torch.device("cpu"), 5) == 5
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert reader_workers(torch.device("cuda"), 0) == 14  # a 16-core GPU host, one rank
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert reader_workers(torch.device("cuda"), 0) == 2  # 4 ranks share the 16 cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert reader_workers(torch.device("cpu"), 0) == 0  # the step's threads fill both cores: in line
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert reader_workers(torch.device("cpu"), 0) == 1


def test_learning_rate_divergence_is_reported(prepared):
    raw = tiny_raw(epochs=1, milestones=(1,))
    raw["train"].update(lr=1e6, renormalize=False, warmup_epochs=0)
    with pytest.raises(FloatingPointError, match="train.lr"):
        run_fit(prepared, "div", raw)


def test_corrupted_resume_state_is_refused_naming_the_file(prepared):
    raw = tiny_raw(epochs=2, milestones=(1,))
    run_fit(prepared, "corrupt", raw)  # a finished run leaves its resume state behind in fit()
    state = prepared / "corrupt" / "state" / "resume.pt"
    with zipfile.ZipFile(state) as zf:  # flip one byte inside the largest stored tensor
        member = max(zf.infolist(), key=lambda m: m.file_size)
    data = bytearray(state.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[member.header_offset + 26 : member.header_offset + 30])
    data[member.header_offset + 30 + name_len + extra_len + member.file_size // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"resume\.pt.*delete"):
        run_fit(prepared, "corrupt", raw)


def test_foreign_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format": "zfnet-checkpoint-v1", "payload": argparse.Namespace(run="code")}, bad)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a zfnet checkpoint"):
        load_checkpoint(other)


def test_train_stage_resumes_after_kill_9(prepared, tmp_path):
    """kill -9 the train stage mid-run; the rerun resumes and ends bitwise equal to an uninterrupted run."""
    raw = tiny_raw(epochs=6, milestones=(2, 6))
    (prepared / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "ZFNET_LOG_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "zfnet.stages.train"]
    proc = subprocess.Popen(cmd, cwd=prepared, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = prepared / ".zfnet/state/train/epoch-002.pt"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the stage ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (prepared / "models/model.pt").exists()

    rerun = subprocess.run(cmd, cwd=prepared, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in rerun.stderr
    resumed = load_checkpoint(prepared / "models/model.pt")["model"]
    straight = run_fit(prepared, "straight", raw)["model"].state_dict()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert not (prepared / ".zfnet/state/train").exists()  # cleaned up once finished

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{prepared / 'mlflow.db'}")
    runs = [r for r in client.search_runs([client.get_experiment_by_name("zfnet").experiment_id])
            if r.data.tags.get("stage") == "train"]
    assert len(runs) == 1, "the resumed stage continues the crashed MLflow run"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")]  # logged once per epoch (validation: every val_every)
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
