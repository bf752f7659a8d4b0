"""Reliability of the whole pipeline and the commands around it: kill -9 inside every kind of stage,
a second `dvc repro` at the same time, a full disk, and `zfnet retrain` killed at each of its steps
(docs/reliability.md, "Every stage and command, every fault", lists what is guaranteed)."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import yaml

import conftest
from zfnet.tracking import PROCESS_TAG, STATE_TAG

# Every kind of stage gets at least one kill -9 inside its own process.
KINDS = ("data", "preprocess", "train", "visualize", "ablate", "analyze", "transfer_data", "transfer", "probe", "report")
# Wall-clock times, the only values that differ between two runs of the pipeline: the `*_seconds`
# keys of metrics/train_details.json, metrics/analyze.json and metrics/ablate/<variant>.json and the
# `*_seconds` columns of plots/train.csv. The report's index.html differs in what records the run
# itself: when it was generated, the git commit, the tracking store's path, run ids and start times.
TIMING = re.compile(r"_seconds(_mean|_sd)?$")
RUN_RECORD = [(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?( UTC)?"), "<time>"),
              (re.compile(r"\b[0-9a-f]{40}\b|\b[0-9a-f]{32}\b|\b[0-9a-f]{12}\b"), "<id>")]
# A second `dvc repro` in the same workspace is refused by DVC's locks: its repository lock while the
# first does DVC's own work, the read/write lock of the running stage's deps and outs while the first
# runs that stage's command (DVC lets go of the repository lock then, so that commands may call dvc).
REFUSED = re.compile(r"ERROR: Unable to acquire lock\. Most likely another DVC process is running or was terminated "
                     r"abruptly\.|ERROR: failed to reproduce '[^']+': '[^']+' is busy, it is being blocked by:\s+"
                     r"\(PID \d+\): \S*dvc repro")


# --- processes ------------------------------------------------------------------------------------

def proc_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (``R``, ``S``, ``T`` stopped, ``Z`` zombie, ...), None if there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (a stopped process is alive)."""
    return proc_state(pid) not in (None, "Z")


def stage_processes(pgid: int) -> dict[str, int]:
    """``{dvc stage: pid}`` of the ``python -m zfnet.stages.<stage> [item]`` processes in group
    ``pgid`` (a stage's own worker processes share its command line: the one whose parent is not
    one of them is the stage)."""
    found: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode().split("\0")
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        if argv[1:2] == ["-m"] and argv[2].startswith("zfnet.stages."):
            name = argv[2].removeprefix("zfnet.stages.") + (f"@{argv[3]}" if len(argv) > 3 and argv[3] else "")
            found[int(entry.name)] = (int(fields[1]), name)
    return {name: pid for pid, (ppid, name) in found.items() if ppid not in found}


def store_rows(root: Path, query: str) -> list[tuple]:
    """Rows of ``query`` on ``root``'s SQLite store, read while another process writes it ([] while locked)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{root / 'mlflow.db'}?mode=ro", uri=True, timeout=0.05) as db:
            return db.execute(query).fetchall()
    except sqlite3.OperationalError:
        return []


class Repro:
    """One ``dvc repro`` in ``root``, in its own process group, so that the test can freeze and
    ``kill -9`` all of it (DVC, the shell, the stage, the stage's workers) at once."""

    def __init__(self, root: Path, env: dict, log: Path):
        self.log = open(log, "a")
        self.proc = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stage_pid(self, stage: str, timeout: float = 900) -> int | None:
        """The pid of ``stage``'s process once it runs; None if ``dvc repro`` ends first."""
        deadline = time.time() + timeout
        while (pid := stage_processes(self.proc.pid).get(stage)) is None:
            if self.proc.poll() is not None:
                return None
            assert time.time() < deadline, f"timed out waiting for stage {stage}"
            time.sleep(0.05)  # a scan of /proc costs milliseconds: leave the cores to the pipeline
        return pid

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        self.log.close()

    def kill_inside(self, pid: int) -> bool:
        """Freeze the whole group (SIGSTOP); if process ``pid`` still runs, ``kill -9`` the group
        there and return True, else let it go on (SIGCONT) and return False."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        deadline = time.time() + 10
        while proc_state(pid) not in (None, "Z", "T", "t"):
            assert time.time() < deadline, "SIGSTOP"
            time.sleep(0.002)
        if alive(pid):
            self.kill()
            return True
        os.killpg(self.proc.pid, signal.SIGCONT)
        return False

    def wait(self, timeout: float = 900) -> int:
        code = self.proc.wait(timeout=timeout)
        self.log.close()
        return code


def kill_plan(seconds: dict[str, float], rng: random.Random) -> list[tuple[str, float, str]]:
    """``[(dvc stage, delay in s, where)]`` in run order: one kill inside a random instance of each
    kind of :data:`KINDS`, for half of the kinds (drawn) ``"inside"``: at a random 5-60% of its
    reference time after its process starts, for the others ``"run"``: 0-0.1 s after it opened its
    (first) MLflow run; and one ``"after"``: in DVC's own work (hashing, caching, the lock file)
    0-0.3 s after another stage's process ended."""
    order = list(seconds)
    by_run = set(rng.sample(KINDS, len(KINDS) // 2))
    plan = []
    for kind in KINDS:
        stage = rng.choice([s for s in order if s.split("@")[0] == kind])
        if kind in by_run:
            plan.append((stage, rng.uniform(0.0, 0.1), "run"))  # a few stages log for a fraction of a second only
        else:
            plan.append((stage, rng.uniform(0.05, 0.6) * seconds[stage], "inside"))
    chosen = {s for s, _, _ in plan}
    plan.append((rng.choice([s for s in order if s not in chosen]), rng.uniform(0.0, 0.3), "after"))
    return sorted(plan, key=lambda p: order.index(p[0]))


def second_repro_refused(root: Path, env: dict) -> None:
    """A second ``dvc repro`` in the same workspace while one runs is refused by DVC's lock."""
    second = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0 and REFUSED.search(second.stderr), second.stderr[-2000:]
    assert "Running stage" not in second.stdout, second.stdout


def repair_rwlock(root: Path, where: str) -> bool:
    """DVC rewrites ``.dvc/tmp/rwlock`` in place (truncate, then write the JSON): a kill -9 between
    the two, in DVC's own work, leaves it cut short, and every later ``dvc`` command refuses with
    "JSON structure is corrupted". The remedy docs/reliability.md gives (no ``dvc`` running: delete
    it; it only names the running processes' locks); returns whether it was needed."""
    path = root / ".dvc/tmp/rwlock"
    try:
        json.loads(path.read_text())
        return False
    except FileNotFoundError:
        return False
    except json.JSONDecodeError:
        assert where == "after", f"DVC's lock file was cut short by a kill inside a stage ({where})"
        path.unlink()
        return True


def repro_with_kills(root: Path, env: dict, plan: list, log: Path) -> tuple[list[dict], list[str]]:
    """``dvc repro`` in ``root``, killed per ``plan`` and rerun after each kill until it completes
    (while ``train`` runs, a second ``dvc repro`` is refused); returns the kills (``{"stage",
    "pid", "where"}``) and the stages whose process ended before its planned kill."""
    kills, missed, step = [], [], 0
    while True:
        repro = Repro(root, env, log)
        while step < len(plan):
            stage, delay, where = plan[step]
            step += 1
            pid = repro.stage_pid(stage)
            assert pid is not None, f"dvc repro ended before stage {stage}:\n{log.read_text()[-3000:]}"
            deadline = time.time() + delay
            if stage == "train":
                second_repro_refused(root, env)
            if where == "run":
                opened = f"SELECT 1 FROM tags WHERE key = '{PROCESS_TAG}' AND value LIKE '%/{pid}/%'"
                while alive(pid) and not store_rows(root, opened):
                    time.sleep(0.02)
                deadline = time.time() + delay
            while alive(pid) and (where == "after" or time.time() < deadline):
                time.sleep(0.005)
            if where == "after":
                time.sleep(delay)
                repro.kill()
            elif not repro.kill_inside(pid):
                missed.append(stage)
                continue
            kills.append({"stage": stage, "pid": pid, "where": f"{where} {stage}, {delay:.2f} s",
                          "rwlock_removed": repair_rwlock(root, where)})
            break
        else:
            assert repro.wait() == 0, f"dvc repro failed:\n{log.read_text()[-3000:]}"
            return kills, missed


# --- comparing two runs ---------------------------------------------------------------------------

def without_times(path: Path, root: Path) -> bytes | object:
    """The content of ``path`` with wall-clock times (:data:`TIMING`) and, in HTML, the record of the
    run itself (:data:`RUN_RECORD`, ``root``) masked."""
    if path.suffix == ".json":
        def strip(value):
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if not TIMING.search(k)}
            return [strip(v) for v in value] if isinstance(value, list) else value
        return strip(json.loads(path.read_text()))
    if path.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(path.read_text())))
        keep = [i for i, name in enumerate(rows[0]) if not TIMING.search(name)]
        return [[row[i] for i in keep] for row in rows]
    if path.suffix == ".html":
        text = path.read_text().replace(str(root), "<root>")
        for pattern, mask in RUN_RECORD:
            text = pattern.sub(mask, text)
        return text
    return path.read_bytes()


def out_hashes(root: Path) -> dict[str, str]:
    """``{out path: md5}`` of every stage's outs in ``root``'s ``dvc.lock``."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def assert_outs_equal(a: Path, b: Path) -> list[str]:
    """Every out of the pipelines in ``a`` and ``b`` has the same md5 in ``dvc.lock``, or the same
    content once times are masked (:func:`without_times`); returns the outs that differ in times only."""
    def files(out: Path) -> list[Path]:  # an out folder's files, or the out file itself
        return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) if out.is_dir() else [Path()]

    ha, hb = out_hashes(a), out_hashes(b)
    assert ha.keys() == hb.keys()
    timed = [path for path in ha if ha[path] != hb[path]]
    for path in timed:
        assert files(a / path) == files(b / path), path
        for f in files(a / path):
            assert without_times(a / path / f, a) == without_times(b / path / f, b), f"{path}/{f} differs"
    return timed


def stage_runs(root: Path) -> list:
    """The child runs (one per stage, variant or setting) in ``root``'s MLflow store."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zfnet")
    return [r for r in client.search_runs([exp.experiment_id], max_results=5000) if r.data.tags.get("stage")]


def run_key(run) -> tuple[str, str]:
    return run.data.tags["dvc_stage"], run.data.tags["variant"]


def untimed_metrics(run) -> dict:
    return {k: v for k, v in run.data.metrics.items() if not TIMING.search(k)}


def assert_runs_once_per_finished_execution(killed: Path, reference: Path, kills: list[dict]) -> Counter:
    """No run left RUNNING or open; per stage, variant and setting exactly one complete run by a
    process that was not killed, with the reference's metrics; runs of killed processes are KILLED
    (or complete, if the kill came after the process had finished its work). Returns the states."""
    ref = {run_key(r): r for r in stage_runs(reference)}
    assert len(ref) == len(stage_runs(reference)) and all(r.data.tags[STATE_TAG] == "complete" for r in ref.values())
    runs = stage_runs(killed)
    killed_pids = {k["pid"] for k in kills}
    pid = lambda r: int(r.data.tags[PROCESS_TAG].rsplit("/", 2)[1])  # noqa: E731
    states = Counter((r.data.tags[STATE_TAG], r.info.status) for r in runs)
    assert set(states) <= {("complete", "FINISHED"), ("killed", "KILLED")}, states
    assert all(pid(r) in killed_pids for r in runs if r.data.tags[STATE_TAG] == "killed")
    finished = [r for r in runs if r.data.tags[STATE_TAG] == "complete" and pid(r) not in killed_pids]
    assert sorted(map(run_key, finished)) == sorted(ref), "each stage, variant and setting finished exactly once"
    for run in finished:
        assert untimed_metrics(run) == untimed_metrics(ref[run_key(run)]), run_key(run)
    return states


@pytest.fixture(scope="module")
def killed_pipeline(tiny_pipeline, tmp_path_factory) -> SimpleNamespace:
    """The tiny pipeline's ``dvc repro`` in a new git copy with the session run's params, killed -9
    per a seeded :func:`kill_plan` and rerun until complete (:func:`repro_with_kills`): ``root``,
    ``env``, ``ui`` (its ``report.mlflow_ui``), ``reference`` (the session run's root), ``kills``,
    ``missed``, ``seconds`` (this run's, with the kills) and ``reference_seconds``."""
    reference, _, ui, _ = tiny_pipeline
    seconds = json.loads((reference.parent / "stage_seconds.json").read_text())
    root, env = conftest.make_project(tmp_path_factory.mktemp("killed") / "project",
                                      ["experiment=tiny", f"report.mlflow_ui='{ui}'"])
    assert (root / "params.yaml").read_text() == (reference / "params.yaml").read_text()
    t0 = time.perf_counter()
    kills, missed = repro_with_kills(root, env, kill_plan(seconds, random.Random(18)), root.parent / "repro.log")
    return SimpleNamespace(root=root, env=env, ui=ui, reference=reference, kills=kills, missed=missed,
                           seconds=time.perf_counter() - t0, reference_seconds=sum(seconds.values()))


@pytest.mark.slow
def test_kill_9_in_every_stage_kind_then_rerun_equals_an_uninterrupted_run(killed_pipeline):
    """``dvc repro`` of the tiny pipeline, its whole process group killed -9 inside each kind of
    stage (seeded: a random instance, a random moment of its process or just after it opened its
    MLflow run) and once in DVC's own work between two stages, rerun after each kill until it
    completes; a second ``dvc repro`` during the first is refused by DVC's lock. Then every out equals the uninterrupted session run's (times aside),
    ``dvc status`` is clean, and MLflow holds each stage's runs once, the killed ones KILLED."""
    run = killed_pipeline
    print(f"{len(run.kills)} kills, {run.seconds:.0f} s (uninterrupted: {run.reference_seconds:.0f} s):",
          *(k["where"] for k in run.kills), sep="\n  ")
    assert not run.missed, f"stages that ended before their planned kill: {run.missed} (faster than the reference run)"
    assert {k["stage"].split("@")[0] for k in run.kills if not k["where"].startswith("after")} == set(KINDS)

    status = subprocess.run(["dvc", "status"], cwd=run.root, env=run.env, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0 and "Data and pipelines are up to date." in status.stdout, status.stdout
    timed = assert_outs_equal(run.root, run.reference)
    variants = yaml.safe_load((run.root / "params.yaml").read_text())["ablation"]["variants"]
    assert set(timed) <= {"metrics/train_details.json", "plots/train.csv", "metrics/analyze.json", "reports",
                          *(f"metrics/ablate/{v}.json" for v in variants)}, timed
    states = assert_runs_once_per_finished_execution(run.root, run.reference, run.kills)
    assert states[("killed", "KILLED")] >= 1, states
    assert not [p for p in (run.root / ".zfnet/state").rglob("*") if p.is_file()], "resume state left behind"


# --- full disk ------------------------------------------------------------------------------------

OUT_OF_SPACE = (r": out of space \((No space left on device|File too large)\): writing it needs ([\d,]+) bytes, "
                r"[\d,]+ bytes free there; free some space and rerun")


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root, or CAP_SYS_ADMIN): a real full disk for the tests."""
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"zfnet-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(probe)],
                                 capture_output=True).returncode == 0
    except OSError:
        return False
    if mounted:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return mounted


needs_mount = pytest.mark.skipif(not can_mount(), reason="cannot mount a tmpfs here (not root): the writers' test "
                                 "covers a full disk with RLIMIT_FSIZE instead")


@pytest.fixture
def small_disk():
    """``mount(path, size)``: a tmpfs of ``size`` bytes at ``path`` (resized by mounting it again),
    unmounted after the test."""
    mounted: list[Path] = []

    def mount(path: Path, size: int) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        options = f"remount,size={size}" if path in mounted else f"size={size}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, capture_output=True)
        mounted.append(path)
        return path

    yield mount
    for path in dict.fromkeys(reversed(mounted)):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


WRITERS = """
import json, sys
from pathlib import Path
import numpy as np, torch
from zfnet import io
from zfnet.plotting import plt, save
from zfnet.train.checkpoint import atomic_save

disk, big = Path(sys.argv[1]), 300_000

def figure(path):
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(np.random.default_rng(0).random((400, 400, 3)))
    save(fig, path)

cases = {"bytes.bin": lambda p: io.write_bytes(p, b"x" * big),
         "table.json": lambda p: io.write_json(p, {"x": "y" * big}),
         "shard.npy": lambda p: io.write_npy(p, np.ones(big, np.uint8)),
         "model.pt": lambda p: atomic_save({"w": torch.ones(big // 4)}, p),
         "figure.png": figure,
         "copy.bin": lambda p: io.copy_file(disk.parent / "source.bin", p)}
for name, write in cases.items():
    path = disk / "out" / name
    if not path.exists():
        io.write_bytes(path, b"old")
    try:
        write(path)
        print(json.dumps([name, "written"]))
    except io.DiskFullError as exc:
        print(json.dumps([name, str(exc)]))
"""


@pytest.mark.slow
def test_every_writer_on_a_full_disk_names_the_file_and_the_bytes_and_keeps_the_old_file(tmp_path, small_disk):
    """Bytes, JSON, NumPy shards, checkpoints, figures and copies written onto a disk with 64 KiB
    left (a tmpfs; without mount rights, a 64 KiB file size limit, RLIMIT_FSIZE): each stops with
    one line naming the file and the bytes it needs, the earlier file stays, no temp file is left;
    with room again the same writes succeed."""
    import resource

    disk = tmp_path / "disk"
    mounted = can_mount()
    limit = 64 * 1024
    (tmp_path / "source.bin").write_bytes(bytes(300_000))  # what copy.bin copies

    def run(room: int) -> dict[str, str]:
        def rlimit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))

        if mounted:
            small_disk(disk, room)
        disk.mkdir(exist_ok=True)
        proc = subprocess.run([sys.executable, "-c", WRITERS, str(disk)], capture_output=True, text=True, timeout=300,
                              preexec_fn=None if mounted else rlimit)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return dict(json.loads(line) for line in proc.stdout.splitlines())

    full = run(limit)
    assert len(full) == 6
    for name, message in full.items():
        path = disk / "out" / name
        match = re.fullmatch(re.escape(str(path)) + OUT_OF_SPACE, message)
        assert match and int(match.group(2).replace(",", "")) >= 300_000, message
        assert path.read_bytes() == b"old", name
    assert sorted(p.name for p in (disk / "out").iterdir()) == sorted(full), "a temp file was left"
    assert run(64 * 2**20) == dict.fromkeys(full, "written")


def test_free_space_is_checked_against_an_estimate_before_a_job(tmp_path):
    """:func:`zfnet.io.check_free_space` (preprocessing's check before it starts): one line with
    the folder, what needs the space, the estimate and the free bytes."""
    from zfnet.io import DiskFullError, check_free_space, free_bytes

    free = free_bytes(tmp_path)
    check_free_space(tmp_path / "shards", 1, "one byte")
    with pytest.raises(DiskFullError) as err:
        check_free_space(tmp_path / "shards", free + 2**40, "the shards of 9 images of 3 x 8 x 8 bytes")
    assert re.fullmatch(re.escape(str(tmp_path / "shards")) + r": not enough free space for the shards of 9 images "
                        r"of 3 x 8 x 8 bytes: needs about [\d,]+ bytes \([\d.]+ GiB, estimated\), [\d,]+ bytes free; "
                        r"free some space or put the folder on a bigger disk", str(err.value))


def test_the_write_pause_failpoint_holds_a_write_open_and_changes_no_byte(tmp_path, monkeypatch):
    """``ZFNET_WRITE_PAUSE_S`` (the kill test's way to land inside a write): while the write is held
    its temp file is there and the old file untouched; afterwards the new bytes are in place; a bad
    value names the variable."""
    import threading
    from zfnet import io as zio

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    monkeypatch.setenv(zio.WRITE_PAUSE_ENV, "0.5")
    writer = threading.Thread(target=zio.write_bytes, args=(target, b"new"))
    writer.start()
    time.sleep(0.2)
    assert [p.name for p in tmp_path.glob(".out.bin.*.tmp")] and target.read_bytes() == b"old"
    writer.join()
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    monkeypatch.setenv(zio.WRITE_PAUSE_ENV, "soon")
    with pytest.raises(ValueError, match=r"ZFNET_WRITE_PAUSE_S='soon': not a number of seconds"):
        zio.write_bytes(target, b"newer")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.slow
@needs_mount
def test_preprocessing_on_a_full_disk_refuses_or_stops_and_the_rerun_completes(tmp_path, small_disk):
    """Preprocessing onto a disk smaller than its estimate refuses before writing anything, naming
    the estimate; onto one that passes the estimate but fills up (file overheads) it stops with one
    line naming the file, and the split it was writing has no manifest (so it is never read; a
    split finished before is whole); with room the rerun completes."""
    from zfnet.config import from_dict
    from zfnet.data.preprocess import preprocess, shard_bytes
    from zfnet.data.shards import ShardDataset
    from zfnet.data.synthetic import write_imagenet
    from zfnet.io import DiskFullError

    cfg = from_dict(conftest.tiny_raw())
    write_imagenet(tmp_path / "raw", cfg.data.synthetic, progress=False)
    images = 4 * (cfg.data.synthetic.train_per_class + cfg.data.synthetic.val_per_class)
    estimate = shard_bytes(images, 64)
    out = small_disk(tmp_path / "prepared", estimate // 2)
    with pytest.raises(DiskFullError) as err:
        preprocess(tmp_path / "raw", out, 64, conftest.TINY_SHARD, 1, progress=False)
    assert f"{out}: not enough free space for the shards of {images} images of 3 x 64 x 64 bytes: needs about " \
           f"{estimate:,} bytes" in str(err.value)
    assert not list(out.iterdir()), "the refused run wrote something"

    small_disk(out, estimate + 4096)  # passes the estimate; page rounding and index files do not fit
    with pytest.raises(DiskFullError) as err:
        preprocess(tmp_path / "raw", out, 64, conftest.TINY_SHARD, 1, progress=False)
    match = re.fullmatch(re.escape(str(out)) + r"/(\w+)/[^/]+" + OUT_OF_SPACE, str(err.value))
    assert match, str(err.value)
    assert not (out / match.group(1) / "manifest.json").exists() and not list(out.rglob(".*.tmp"))
    for manifest in out.rglob("manifest.json"):  # a split written before the disk filled is whole
        assert len(ShardDataset(manifest.parent)) == json.loads(manifest.read_text())["count"]

    small_disk(out, 4 * estimate)
    manifests = preprocess(tmp_path / "raw", out, 64, conftest.TINY_SHARD, 1, progress=False)
    assert sum(m["count"] for m in manifests.values()) == images


def stage(name: str, root: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"zfnet.stages.{name}"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
@needs_mount
def test_training_on_a_full_disk_stops_with_one_line_and_resumes_when_there_is_room(tiny_prepared, tmp_path, small_disk):
    """The train stage in a project on a disk that fills while it writes its checkpoints: exit 2,
    one line naming the checkpoint and the bytes it needs, every file on the disk whole (no model
    that looks complete); once there is room the rerun resumes and finishes."""
    from test_reliability import assert_every_checkpoint_loads, saved_epoch, stage_env, temp_files

    data = sum(f.stat().st_size for f in tiny_prepared.rglob("*") if f.is_file())
    root = small_disk(tmp_path / "project", data + 200 * 1024)  # room for the first epoch's state, not all
    conftest.tiny_project(root, tiny_prepared, conftest.tiny_raw())
    env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    full = stage("train", root, env)
    assert full.returncode == 2, full.stderr[-3000:]
    last = full.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"zfnet train: error: \S+\.pt" + OUT_OF_SPACE, last) and "Traceback" not in full.stderr, last
    print(last)
    assert not (root / "models/model.pt").exists() and not temp_files(root)
    assert_every_checkpoint_loads(root)
    epochs = saved_epoch(root / ".zfnet/state/train")

    small_disk(root, data + 16 * 2**20)
    rerun = stage("train", root, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not epochs or f"after epoch {epochs}" in rerun.stderr
    assert_every_checkpoint_loads(root)
    assert (root / "metrics/train.json").exists()


@pytest.mark.slow
@needs_mount
def test_mlflow_artifacts_on_a_full_disk_stop_the_stage_with_one_line(tmp_path, small_disk):
    """The MLflow artifact store (``mlartifacts/`` beside the SQLite store) on a full disk: the
    stage stops with one line naming the artifact and the bytes it needs, its run ends FAILED; with
    room the rerun logs it."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(conftest.tiny_raw()))
    artifacts = small_disk(root / "mlartifacts", 4096)
    (artifacts / "filler").write_bytes(bytes(4096 - 512))  # what is left: less than params.yaml
    env = {**conftest.clean_env(), "ZFNET_LOG_LEVEL": "WARNING"}
    full = stage("data", root, env)
    assert full.returncode == 2, full.stderr[-3000:]
    last = full.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"zfnet data: error: \S+/artifacts/params\.yaml" + OUT_OF_SPACE, last), last
    params_bytes = (root / "params.yaml").stat().st_size
    assert f"needs {params_bytes:,} bytes" in last and "Traceback" not in full.stderr
    runs = stage_runs(root)
    assert [(r.info.status, r.data.tags[STATE_TAG]) for r in runs] == [("FAILED", "failed")]

    (artifacts / "filler").unlink()
    small_disk(artifacts, 4 * 2**20)
    rerun = stage("data", root, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    statuses = sorted((r.info.status, r.data.tags[STATE_TAG]) for r in stage_runs(root))
    assert statuses == [("FAILED", "failed"), ("FINISHED", "complete")]


# --- zfnet retrain killed at each step ------------------------------------------------------------

def champion(root: Path) -> int | None:
    """The version ``champion`` points at (None: none yet), after loading its MLflow model and its
    checkpoint artifact."""
    import mlflow.pytorch

    from zfnet.train.checkpoint import load_checkpoint

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    try:
        version = client.get_model_version_by_alias("zfnet", "champion")
    except mlflow.exceptions.MlflowException:
        return None
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    assert mlflow.pytorch.load_model("models:/zfnet@champion") is not None
    with tempfile.TemporaryDirectory() as tmp:
        assert load_checkpoint(mlflow.artifacts.download_artifacts(version.tags["checkpoint_uri"], dst_path=tmp))
    return int(version.version)


def retrain_killed_when(root: Path, env: dict, args: list[str], reached, log: Path) -> None:
    """``zfnet retrain ARGS`` in its own process group, frozen and ``kill -9``-ed whole as soon as
    ``reached()`` holds (it must not finish first)."""
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "zfnet.cli", "retrain", *args], cwd=root, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while not reached():
        assert proc.poll() is None, f"zfnet retrain ended first:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGSTOP)
    assert proc.poll() is None, "zfnet retrain ended first"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def retrain(root: Path, env: dict, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "zfnet.cli", "retrain", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def decisions(root: Path) -> dict[str, str | None]:
    """``{version: its retrain.decision tag}`` of the registered model ``zfnet``."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return {str(v.version): v.tags.get("retrain.decision") for v in client.search_model_versions("name = 'zfnet'")}


@pytest.mark.slow
def test_retrain_killed_in_training_registration_and_promotion_recovers(killed_pipeline, tmp_path):
    """On the project of the kill test, ``zfnet retrain`` registers its model as version 1, the
    champion (and, its decision tag removed as if killed after ``champion`` moved, records it as
    promoted again). A retrain with a new learning rate is then killed -9 during training, during
    registration (once version 2 exists) and during promotion (once its reason is tagged): after
    each kill ``champion`` points at a version whose MLflow model and checkpoint load. The next
    retrain recovers: version 2 decided, no version left undecided, the killed retrain runs KILLED;
    the one after finds nothing changed."""
    root, env, ui = killed_pipeline.root, killed_pipeline.env, killed_pipeline.ui
    same = ["experiment=tiny", f"report.mlflow_ui='{ui}'"]
    assert "-> promoted (no champion yet)" in retrain(root, env, same).stdout
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    client.delete_model_version_tag("zfnet", "1", "retrain.decision")  # as if killed after champion moved
    redo = retrain(root, env, same).stdout
    assert "version 1 (challenger)" in redo and "-> promoted (no champion yet)" in redo, redo
    assert champion(root) == 1 and decisions(root) == {"1": "promoted"}

    changed, log = [*same, "train.lr=0.03"], tmp_path / "retrain.log"
    state = root / ".zfnet/state/train/resume.pt"
    steps = {"training": lambda: state.exists(),
             "registration": lambda: store_rows(root, "SELECT version FROM model_versions WHERE version = 2"),
             "promotion": lambda: store_rows(root, "SELECT 1 FROM model_version_tags WHERE version = 2 "
                                                   "AND key = 'retrain.reason'")}
    for step, reached in steps.items():
        retrain_killed_when(root, env, changed, reached, log)
        assert champion(root) == 1 or step == "promotion" and champion(root) == 2, step
    assert decisions(root) == {"1": "promoted", "2": None}

    recovered = retrain(root, env, changed)
    assert "version 2 (challenger)" in recovered.stdout, recovered.stdout
    report = json.loads(sorted((root / "reports/retrain").glob("*.json"))[-1].read_text())
    assert champion(root) == (2 if report["decision"] == "promoted" else 1)
    assert decisions(root) == {"1": "promoted", "2": report["decision"]}
    assert {k: int(v) for k, v in client.get_registered_model("zfnet").aliases.items()}["challenger"] == 2
    exp = client.get_experiment_by_name("zfnet")
    runs = client.search_runs([exp.experiment_id], "tags.`zfnet.role` = 'retrain'", order_by=["attributes.start_time"])
    assert [(r.info.status, r.data.tags[STATE_TAG]) for r in runs] == [
        ("FINISHED", "complete")] * 2 + [("KILLED", "killed")] * 3 + [("FINISHED", "complete")]
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    assert retrain(root, env, changed).stdout.strip() == "zfnet retrain: nothing changed since version 2"
