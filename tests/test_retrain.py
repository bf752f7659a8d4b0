"""Scheduled retraining: real `zfnet retrain` runs of the tiny pipeline in a temporary git copy of the repo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_env, make_project
from zfnet.retrain import decide, exclusive_lock
from zfnet.cli.retrain import BUSY_EXIT

REPO = Path(__file__).resolve().parents[1]
TINY = ["experiment=tiny"]


def zfnet(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zfnet.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_decide_needs_more_than_the_margin():
    assert decide({"val_top1_error": 10.0}, {"val_top1_error": 12.0}, 1.0)[0]
    assert not decide({"val_top1_error": 11.0}, {"val_top1_error": 12.0}, 1.0)[0]  # exactly the margin
    assert not decide({"val_top1_error": 14.0}, {"val_top1_error": 12.0}, 0.0)[0]
    assert not decide({"val_top1_error": 1.0}, None, 0.0)[0]  # champion not comparable


def test_concurrent_retrain_is_refused(tmp_path):
    with exclusive_lock(tmp_path / ".zfnet/retrain.lock"):
        proc = zfnet(["retrain"], tmp_path, clean_env())
    assert proc.returncode == BUSY_EXIT, proc.stderr
    assert f"another zfnet retrain is running (pid {os.getpid()} holds" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "reports").exists()
    with exclusive_lock(tmp_path / ".zfnet/retrain.lock"):  # released when the holder ends: taken again
        pass


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    return make_project(tmp_path_factory.mktemp("retrain") / "project")


def aliases(root: Path) -> dict:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return {k: int(v) for k, v in client.get_registered_model("zfnet").aliases.items()}


def last_report(root: Path) -> dict:
    return json.loads(sorted((root / "reports/retrain").glob("*.json"))[-1].read_text())


@pytest.mark.slow
def test_retrain_registers_compares_and_promotes(project):
    root, env = project
    first = zfnet(["retrain", *TINY], root, env)
    assert first.returncode == 0, first.stderr[-3000:]
    report = last_report(root)
    assert report["decision"] == "promoted" and report["version"] == 1 and report["reason"] == "no champion yet"
    assert aliases(root) == {"champion": 1, "challenger": 1}
    print("retrain 1:", first.stdout.strip())

    same = zfnet(["retrain", *TINY], root, env)
    assert same.returncode == 0, same.stderr[-3000:]
    assert same.stdout.strip() == "zfnet retrain: nothing changed since version 1"
    assert len(list((root / "reports/retrain").glob("*.json"))) == 1

    # New data, and a deliberately worse model on it (learning rate 1e-6: the weights barely leave
    # their initialisation): the pipeline reruns from the data, the challenger is kept out.
    worse = zfnet(["retrain", *TINY, "data.synthetic.seed=1", "train.lr=1e-6"], root, env)
    assert worse.returncode == 0, worse.stderr[-3000:]
    report = last_report(root)
    print("retrain 2:", worse.stdout.strip())
    assert report["version"] == 2 and report["champion_version"] == 1 and report["decision"] == "kept"
    assert {"data", "train"} <= set(report["changed_stages"])  # what dvc status names changed
    assert report["challenger"]["val_top1_error"] > report["champion"]["val_top1_error"] - report["margin"]
    champion = 1
    assert aliases(root) == {"champion": champion, "challenger": 2}

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    v2 = client.get_model_version("zfnet", "2")
    assert v2.tags["retrain.decision"] == "kept" and float(v2.tags["retrain.challenger_val_top1_error"]) == \
        pytest.approx(report["challenger"]["val_top1_error"], abs=1e-4)
    retrain_run = client.get_run(report["retrain_run_id"])
    assert retrain_run.data.tags["retrain.decision"] == "kept"
    children = client.search_runs([retrain_run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{report['retrain_run_id']}'")
    assert {r.data.tags["stage"] for r in children} == {"data", "preprocess", "train"}

    # A failed run (training diverges) is recorded and never moves champion.
    failed = zfnet(["retrain", *TINY, "train.lr=1e6", "train.renormalize=false", "train.warmup_epochs=0"], root, env)
    assert failed.returncode == 1 and "failed, champion unchanged" in failed.stderr
    assert last_report(root)["decision"] == "failed"
    assert aliases(root) == {"champion": champion, "challenger": 2}
