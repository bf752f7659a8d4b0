"""Reliability of the real train stage: kill -9 at random points, 4 runs at once on one SQLite store,
and a tracking server that goes away mid-run (docs/reliability.md lists what is guaranteed)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import torch

import conftest
from zfnet.train.checkpoint import load_checkpoint

STAGE = [sys.executable, "-m", "zfnet.stages.train"]
EPOCHS = 10
MILESTONES = [2, 5, 10]
TIMING_KEYS = {"train_seconds", "epoch_seconds"}  # wall-clock times: the only numbers allowed to differ


def tiny_params(epochs: int = EPOCHS, milestones=MILESTONES, seed: int = 0) -> dict:
    """The tests' tiny profile with 64 training images per class (epochs of ~0.3 s to kill inside)."""
    return conftest.tiny_raw(f"seed={seed}", "data.synthetic.train_per_class=64", f"train.epochs={epochs}",
                             f"train.milestones=[{','.join(map(str, milestones))}]")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """``data/prepared`` of that dataset, from the real generator and preprocessing."""
    return conftest.prepare_data(tiny_params(), tmp_path_factory.mktemp("reliability"))


def stage_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "ZFNET_"))}
    return {**env, "ZFNET_LOG_LEVEL": "INFO", **extra}


# --- crash-resume ---------------------------------------------------------------------------------

def resume_stamp(state: Path) -> tuple[int, int] | None:
    """Identity of the current ``resume.pt`` (a new inode per atomic write), None if absent."""
    try:
        st = os.stat(state / "resume.pt")
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def saved_epoch(state: Path) -> int:
    """The last finished epoch recorded in ``resume.pt`` (0: none)."""
    path = state / "resume.pt"
    return int(torch.load(path, weights_only=True)["epoch"]) if path.exists() else 0


def temp_files(root: Path) -> list[Path]:
    """Temp files of interrupted atomic writes (``.<name>.XXXX.tmp``) under the state and out folders."""
    return sorted(p for d in (root / ".zfnet", root / "models") if d.exists() for p in d.rglob(".*.tmp"))


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the stage ended (rc {proc.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def kill_at(kind: str, proc: subprocess.Popen, root: Path, rng: random.Random) -> str:
    """kill -9 the stage at a random point of the given kind; returns where it landed.

    ``startup``: 0.5-6 s after launch, before training starts (imports, MLflow setup).
    ``epoch``: once this run has finished an epoch, 20-250 ms later, inside the next epoch.
    ``write``: inside an atomic checkpoint write: stopped (SIGSTOP) as soon as a temp file
    appears and killed only if the temp file is still there, so the kill is provably mid-write
    (the ``ZFNET_WRITE_PAUSE_S`` failpoint holds each write open long enough to be seen).
    ``publish``: 0-500 ms after the last epoch's state, while the outs are copied and logged.
    """
    state = root / ".zfnet/state/train"
    start_stamp = resume_stamp(state)
    progressed = lambda: resume_stamp(state) not in (None, start_stamp)  # noqa: E731
    if kind == "startup":  # at a random time, but before training starts (the run file is written just before)
        deadline, run_file = time.time() + rng.uniform(0.5, 6.0), state / "mlflow_run.json"
        run_stamp = run_file.stat().st_mtime_ns if run_file.exists() else None
        training = lambda: run_file.exists() and run_file.stat().st_mtime_ns != run_stamp  # noqa: E731
        wait_until(lambda: time.time() >= deadline or training(), proc, "the startup kill")
    elif kind == "epoch":
        wait_until(progressed, proc, "an epoch to finish")
        time.sleep(rng.uniform(0.02, 0.25))
    elif kind == "write":
        stale = set(temp_files(root))  # left by earlier kills
        writing = lambda: bool(set(temp_files(root)) - stale)  # noqa: E731
        wait_until(progressed, proc, "an epoch to finish")
        while True:
            wait_until(writing, proc, "a checkpoint write")
            os.kill(proc.pid, signal.SIGSTOP)
            wait_until(lambda: stopped(proc.pid), proc, "SIGSTOP", timeout=10)
            if writing():
                break  # frozen in the middle of a write: kill it there
            os.kill(proc.pid, signal.SIGCONT)
    elif kind == "publish":
        wait_until(lambda: progressed() and saved_epoch(state) == EPOCHS, proc, "the last epoch")
        time.sleep(rng.uniform(0.0, 0.5))
    else:
        raise ValueError(kind)
    assert proc.poll() is None, f"the stage ended before the {kind} kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return f"{kind} (epoch {saved_epoch(state)} saved)"


def assert_every_checkpoint_loads(root: Path) -> None:
    """Every checkpoint and JSON file in the state and out folders is whole (temp files aside)."""
    state = root / ".zfnet/state/train"
    for path in sorted([*state.glob("*.pt"), *(root / "models").rglob("*.pt")]):
        if path.name == "resume.pt":
            resume = torch.load(path, weights_only=True)
            assert {"fingerprint", "epoch", "model", "optimizer"} <= set(resume), path
        else:
            assert load_checkpoint(path)["format"] == "zfnet-checkpoint-v1", path
    for path in (state / "mlflow_run.json", root / "metrics/train.json"):
        if path.exists():
            json.loads(path.read_text())


def metric_histories(root: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` of the one train run in ``root``'s ``mlflow.db``."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zfnet")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "train"]
    assert len(runs) == 1, f"{root}: {len(runs)} train runs"
    assert runs[0].info.status == "FINISHED"
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, key))
            for key in runs[0].data.metrics}


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun_equals_an_uninterrupted_run(prepared, tmp_path):
    """Six kill -9 of the train stage at seeded random points (startup, inside epochs, inside
    checkpoint writes, while publishing the outs); after each kill every checkpoint on disk loads,
    each rerun resumes from the last finished epoch, and the end result is bitwise the uninterrupted run's."""
    raw = tiny_params()
    straight = conftest.tiny_project(tmp_path / "straight", prepared, raw)
    crashed = conftest.tiny_project(tmp_path / "crashed", prepared, raw)
    env = stage_env(ZFNET_WRITE_PAUSE_S="0.05")  # every write held 50 ms: the write kills never miss one
    reference = subprocess.Popen(STAGE, cwd=straight, env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)  # runs alongside the kill trials (2 cores)
    rng = random.Random(2014)
    state = crashed / ".zfnet/state/train"
    landed, epochs_seen = [], [0]
    for n, kind in enumerate(["startup", "epoch", "write", "epoch", "write", "publish"]):
        before = saved_epoch(state)
        log_path = tmp_path / f"run-{n}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(STAGE, cwd=crashed, env=env, stdout=subprocess.DEVNULL, stderr=log)
            landed.append(kill_at(kind, proc, crashed, rng))
        assert proc.returncode == -signal.SIGKILL
        assert_every_checkpoint_loads(crashed)
        after = saved_epoch(state)
        assert after >= before, "a kill lost a finished epoch"
        if after > before and before > 0:
            assert f"after epoch {before}" in log_path.read_text(), f"run {n} did not resume from epoch {before}"
        epochs_seen.append(after)
    assert epochs_seen[-1] == EPOCHS and temp_files(crashed), (epochs_seen, landed)  # the mid-write kills' leftovers

    final = subprocess.run(STAGE, cwd=crashed, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"resuming from {Path('.zfnet/state/train/resume.pt')} after epoch {EPOCHS}" in final.stderr
    assert not state.exists() and not temp_files(crashed)  # cleaned up once finished
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]

    for name in ["model.pt", *(f"milestones/epoch-{e:03d}.pt" for e in MILESTONES)]:
        a, b = load_checkpoint(crashed / "models" / name), load_checkpoint(straight / "models" / name)
        assert a["epoch"] == b["epoch"] and a["model"].keys() == b["model"].keys(), name
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"]), f"{name} differs"
    ma, mb = (json.loads((p / "metrics/train.json").read_text()) for p in (crashed, straight))
    assert {k: v for k, v in ma.items() if k not in TIMING_KEYS} == {k: v for k, v in mb.items() if k not in TIMING_KEYS}
    ha, hb = metric_histories(crashed), metric_histories(straight)
    assert ha.keys() == hb.keys()
    for key in ha:
        if key.startswith("final_") or key in TIMING_KEYS:
            continue
        assert [s for s, _ in ha[key]] == [s for s, _ in hb[key]], f"{key}: each epoch logged once"
        assert ha[key] == hb[key], key
    assert [s for s, _ in ha["train_loss"]] == list(range(1, EPOCHS + 1))  # every epoch once (validation: every val_every)


# --- untrusted checkpoints ------------------------------------------------------------------------

class RunsCode:
    """A pickle that runs a shell command when unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_tampered_or_foreign_checkpoints_are_refused_with_a_reason(tmp_path):
    """Loaded with weights_only=True after the zip CRCs are checked: no code runs, changed bytes are caught."""
    from zfnet.config import ModelConfig
    from zfnet.models import build
    from zfnet.train.checkpoint import FORMAT, CheckpointError, atomic_save

    model = build(ModelConfig(widths=[8, 16, 16, 16, 8], fc_sizes=[32, 32]), 4, 56)
    good = tmp_path / "good.pt"
    atomic_save({"format": FORMAT, "epoch": 3, "model": model.state_dict(), "model_config": {},
                 "num_classes": 4, "input_size": 56}, good)
    data = good.read_bytes()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in load_checkpoint(good)["model"].items())
    weights = data.find(model.state_dict()["features.conv1.conv.weight"].numpy().tobytes()[:64])
    assert weights > 0
    flipped = bytearray(data)
    flipped[weights + 10] ^= 0x01  # one bit of one weight
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "epoch": 1, "model": RunsCode(marker)}, evil)
    cases = {
        "flipped.pt": (bytes(flipped), "fails its CRC-32 check, the file was modified or corrupted"),
        "truncated.pt": (data[: len(data) // 2], "refused"),
        "empty.pt": (b"", "refused to load as a zfnet checkpoint (weights_only=True)"),
        "random.pt": (bytes(random.Random(0).getrandbits(8) for _ in range(4096)), "refused"),
        "evil.pt": (evil.read_bytes(), "refused to load as a zfnet checkpoint (weights_only=True): Weights only load failed"),
    }
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    cases["foreign.pt"] = (foreign.read_bytes(), "not a zfnet checkpoint (expected format 'zfnet-checkpoint-v1')")
    incomplete = tmp_path / "incomplete.pt"
    torch.save({"format": FORMAT, "epoch": 3, "model": model.state_dict()}, incomplete)
    cases["incomplete.pt"] = (incomplete.read_bytes(), "incomplete zfnet checkpoint, missing model_config, num_classes, input_size")
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and reason in message and "\n" not in message, (name, message)
    assert not marker.exists(), "unpickling ran code"


# --- concurrency ----------------------------------------------------------------------------------

def train_runs(client: mlflow.MlflowClient) -> dict[int, mlflow.entities.Run]:
    """``{seed: run}`` of the train stage runs in the ``zfnet`` experiment."""
    exp = client.get_experiment_by_name("zfnet")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "train"]
    return {int(r.data.params["seed"]): r for r in runs}


def assert_epochs_logged_once(client: mlflow.MlflowClient, run, project: Path) -> None:
    """Every per-epoch metric of ``project``'s ``plots/train.csv`` is in the run, once per epoch, same value."""
    import pandas as pd

    curves = pd.read_csv(project / "plots/train.csv")
    for key in curves.columns.drop("epoch"):
        expected = curves[["epoch", key]].dropna()  # the 10-crop columns: milestones and the last epoch only
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert [s for s, _ in history] == expected.epoch.tolist(), f"{project.name}: {key} steps {history}"
        assert [v for _, v in history] == pytest.approx(expected[key].tolist(), rel=1e-9), f"{project.name}: {key}"
    final = json.loads((project / "metrics/train.json").read_text())
    assert run.data.metrics["final_val_top1_error"] == final["val_top1_error"]
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_four_runs_at_once_log_everything_to_one_new_sqlite_store(prepared, tmp_path):
    """Four train stages (a 4-seed sweep) start together on one SQLite store that does not exist yet."""
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    projects = [conftest.tiny_project(tmp_path / f"seed{i}", prepared, tiny_params(epochs=3, milestones=[3], seed=i))
                for i in range(4)]
    env = stage_env(MLFLOW_TRACKING_URI=uri)
    procs = [subprocess.Popen(STAGE, cwd=p, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for p in projects]
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    for proc, err in zip(procs, errors):
        assert proc.returncode == 0, err[-3000:]

    client = mlflow.MlflowClient(uri)
    runs = train_runs(client)
    assert sorted(runs) == [0, 1, 2, 3]
    exp = client.get_experiment_by_name("zfnet")
    parents = {r.info.run_id for r in client.search_runs([exp.experiment_id], "tags.`zfnet.role` = 'pipeline'")}
    assert len(parents) == 4 and {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == parents
    for seed, project in enumerate(projects):
        assert_epochs_logged_once(client, runs[seed], project)
    assert sorted(p.name for p in store.iterdir()) == ["mlflow.db"]  # no temp store left behind


# --- tracking outages -----------------------------------------------------------------------------

class Link:
    """A TCP relay to a real MLflow server whose line can be cut and restored: while cut, every
    connection (open or new) is reset, as when the server goes away; the port stays the same."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._cut = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, []
        for s in sockets:
            self._reset(s)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self.cut()
        self._listener.close()

    @staticmethod
    def _reset(s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
            s.shutdown(socket.SHUT_RDWR)
        s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                cut = self._cut
            if cut:
                self._reset(client)
                continue
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.mark.slow
def test_tracking_outage_mid_training(prepared, tmp_path):
    """The line to a real MLflow server is cut after epoch 2 of two train stages. A: restored two
    epochs later; training never stops, the kept epochs are sent, the stage succeeds. B: stays
    cut; training finishes and writes its outs, the stage ends with one line saying what to do,
    and the rerun (line restored) logs the missing epochs without training again."""
    (tmp_path / "server").mkdir()
    a = conftest.tiny_project(tmp_path / "a", prepared, tiny_params(epochs=12, milestones=[12], seed=1))
    b = conftest.tiny_project(tmp_path / "b", prepared, tiny_params(epochs=6, milestones=[6], seed=2))
    with conftest.mlflow_server(tmp_path / "server/mlflow.db", tmp_path / "server/artifacts") as url:
        port = int(url.rsplit(":", 1)[1])
        link_a, link_b = Link(port), Link(port)
        schedule = {"ZFNET_TRACKING_TRIES": "2", "ZFNET_TRACKING_DELAY": "0.3"}
        procs = {name: subprocess.Popen(STAGE, cwd=root, env=stage_env(MLFLOW_TRACKING_URI=link.url, **schedule),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for name, root, link in (("a", a, link_a), ("b", b, link_b))}
        state_a, state_b = a / ".zfnet/state/train", b / ".zfnet/state/train"
        cut_at = {}
        deadline = time.time() + 300
        while not {"b", "restored"} <= cut_at.keys():
            ended = [name for name, p in procs.items() if p.poll() is not None]
            assert not ended, f"stage {ended[0]} ended before its outage: {procs[ended[0]].stderr.read()[-2000:]}"
            assert time.time() < deadline, f"timed out: {cut_at}"
            for name, state, link in (("a", state_a, link_a), ("b", state_b, link_b)):
                if name not in cut_at and saved_epoch(state) >= 2:
                    link.cut()
                    cut_at[name] = saved_epoch(state)
            if "a" in cut_at and saved_epoch(state_a) >= cut_at["a"] + 2:  # trained on while cut off
                link_a.restore()
                cut_at["restored"] = saved_epoch(state_a)
            time.sleep(0.01)
        assert cut_at["restored"] < 12, "stage A finished before the line was restored"

        _, err_a = procs["a"].communicate(timeout=300)
        assert procs["a"].returncode == 0, err_a[-3000:]
        assert "try 2 of 2" in err_a and "training goes on" in err_a and "answers again" in err_a

        _, err_b = procs["b"].communicate(timeout=300)
        assert procs["b"].returncode == 2, err_b[-3000:]
        last = err_b.strip().splitlines()[-1]
        assert last.startswith("zfnet train: error: MLflow tracking store") and "Traceback" not in err_b
        assert "stayed unreachable" in last and "rerun the stage" in last
        assert load_checkpoint(b / "models/model.pt")["epoch"] == 6 and (b / "metrics/train.json").exists()
        assert saved_epoch(state_b) == 6  # the resume state is kept for the rerun

        link_b.restore()
        rerun = subprocess.run(STAGE, cwd=b, env=stage_env(MLFLOW_TRACKING_URI=link_b.url), capture_output=True,
                               text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "after epoch 6" in rerun.stderr

        client = mlflow.MlflowClient(f"http://127.0.0.1:{port}")
        runs = train_runs(client)
        assert sorted(runs) == [1, 2]
        assert_epochs_logged_once(client, runs[1], a)
        assert_epochs_logged_once(client, runs[2], b)
        link_a.close()
        link_b.close()
