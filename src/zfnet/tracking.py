"""MLflow tracking: one parent run per pipeline execution, one child run per stage.

- Store: ``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri`` from params, else SQLite at an
  absolute path ``<project root>/mlflow.db``. The project root is found even from inside DVC's
  temporary experiment folders (``.dvc/tmp/exps/...``) so queued experiments log to the same store.
- Parent run: found by the tag ``zfnet.pipeline_key`` = hash of (git commit, DVC experiment
  name, params.yaml); every stage of one ``dvc repro`` / ``dvc exp run`` shares it.
  ``ZFNET_PARENT_RUN_ID`` overrides (orchestrators such as ``zfnet retrain`` set it).
- Child runs carry tags ``stage``, ``variant``, ``dvc_stage`` (the ``dvc.yaml`` stage that logged
  it: ``transfer@caltech101`` for its runs ``transfer@caltech101-15``, ``-30``...), ``git_commit``,
  ``dvc_exp_name``, ``data_hash``, the flattened params and ``params.yaml`` as an artifact.
- Killed stages: each child run is tagged with the process that opened it (``zfnet.process``:
  host, boot id, pid, start time) and ``zfnet.stage_state`` = ``running``, set to ``complete`` when
  the stage process's last run ends (:func:`stage_run`, ``last``). A run still ``running`` whose
  process is gone from this host (``kill -9``, a reboot) is closed by the next stage or ``zfnet
  retrain`` that starts in the experiment (:func:`close_orphans`): status ``KILLED`` (it was
  ``RUNNING``, or ``FINISHED`` but its stage never finished) and state ``killed``; ``FAILED``
  stays so, state ``failed``. Runs of live processes and of other hosts are left alone.
- Outages: a store that cannot be used at a stage's start stops it at once (:func:`connect`);
  a failure later is retried with backoff (:func:`retry`, on ``tenacity``), and per-epoch metrics survive a longer
  outage (:class:`EpochLog`): training goes on and they are sent when the store is back.
  ``ZFNET_TRACKING_TRIES`` (default 5) and ``ZFNET_TRACKING_DELAY`` (seconds, default 2, doubled
  after each failure) set the schedule.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import tenacity
import yaml

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent first use of a new SQLite store is then unguarded
    fcntl = None  # type: ignore[assignment]

from zfnet.config import Config, flatten, to_dict
from zfnet.errors import first_line
from zfnet.io import atomic_path, disk_full, load_yaml, out_of_space

log = logging.getLogger(__name__)

PIPELINE_KEY_TAG = "zfnet.pipeline_key"
PROCESS_TAG = "zfnet.process"  # host/boot id/pid/start time of the process that opened the run
STATE_TAG = "zfnet.stage_state"  # running | complete | killed | failed
_OPEN_RUNS: list[str] = []  # this process's child runs not yet complete (see stage_run's ``last``)
MAX_DELAY = 60.0  # seconds: the longest wait between two tries
T = TypeVar("T")


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached or used."""


def project_root(start: str | Path | None = None) -> Path:
    """The project's root folder; from inside ``<root>/.dvc/tmp/exps/<run>/`` it is ``<root>``."""
    path = Path(start or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return path


def tracking_uri(cfg: Config | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` > ``tracking.uri`` > ``sqlite:///<project root>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg is not None and cfg.tracking.uri:
        return cfg.tracking.uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit checked out in ``cwd`` (default: the current folder), or ``unknown``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_hash(lock_path: str | Path = "dvc.lock", stage: str = "preprocess") -> str:
    """The md5 of ``stage``'s first out in ``dvc.lock`` (the prepared data), or ``unknown``."""
    try:
        lock = load_yaml(Path(lock_path).read_text())
        return str(lock["stages"][stage]["outs"][0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


def pipeline_key(params_path: str | Path = "params.yaml") -> str:
    try:
        params = Path(params_path).read_bytes()
    except OSError:
        params = b""
    payload = b"\0".join([git_commit().encode(), os.environ.get("DVC_EXP_NAME", "").encode(), params])
    return hashlib.sha256(payload).hexdigest()[:16]


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _sqlite_lock(uri: str) -> Iterator[None]:
    """For a SQLite store: an exclusive ``flock`` on its folder, and the file created whole.

    MLflow creates and migrates a new SQLite store's tables on first use. Several processes
    doing that at once (4 queued experiments) break it ("table ... already exists"), and so does
    a process killed halfway (SQLite commits each ``CREATE TABLE`` on its own). So a missing
    store is built in a temp file beside it and renamed into place, one process at a time. The
    lock is on the folder (no lock file) and the kernel drops it when its process dies.
    """
    path = _sqlite_path(uri)
    if path is None or fcntl is None or not path.parent.is_dir():
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not path.exists():
            _create_sqlite_store(path)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _create_sqlite_store(path: Path) -> None:
    """An MLflow SQLite store with all its tables at ``path``, which appears only when complete."""
    import mlflow

    with atomic_path(path) as tmp:
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp.resolve()}").search_experiments(max_results=1)


def connect(cfg: Config | None = None) -> str:
    """Point MLflow at the store and fail fast with one clear line if it cannot be reached."""
    import mlflow

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    try:
        with _one_http_try(), _sqlite_lock(uri):  # the first client creates the tables: one process at a time
            mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception as exc:  # unreachable server, bad credentials, unwritable SQLite file
        raise TrackingError(f"MLflow tracking store {uri!r} is not usable: {first_line(exc)}") from None
    return uri


@contextlib.contextmanager
def _one_http_try(timeout: int | None = 10) -> Iterator[None]:
    """MLflow's HTTP calls without its own retries (minutes of backoff with its defaults) and
    with a ``timeout`` in seconds (None: MLflow's, 120 s, for uploads), unless the user set
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``..._TIMEOUT``: the callers here give up at once
    (:func:`connect`) or keep their own schedule (:func:`retry`)."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    if timeout is not None:
        quick["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    unset = [k for k in quick if k not in os.environ]
    os.environ.update({k: quick[k] for k in unset})
    try:
        yield
    finally:
        for k in unset:
            os.environ.pop(k, None)


def _schedule() -> tuple[int, float]:
    """``(tries, first delay in s)`` from ``ZFNET_TRACKING_TRIES`` / ``ZFNET_TRACKING_DELAY``."""
    values = []
    for name, default, kind in (("ZFNET_TRACKING_TRIES", "5", int), ("ZFNET_TRACKING_DELAY", "2", float)):
        raw = os.environ.get(name, default)
        try:
            value = kind(raw)
        except ValueError:
            value = -1
        if not value >= (1 if kind is int else 0):
            raise TrackingError(f"environment variable {name}: must be a {'positive integer' if kind is int else 'number >= 0'}, got {raw!r}")
        values.append(value)
    return values[0], values[1]


def retry(call: Callable[[], T], what: str, tries: int | None = None, timeout: int | None = 10) -> T:
    """``call()`` (one MLflow call), tried again after a failure of the store.

    Up to ``tries`` tries (default ``ZFNET_TRACKING_TRIES``), waiting ``ZFNET_TRACKING_DELAY``
    seconds after the first failure and twice as long after each next one (at most 60 s): with
    the defaults 2 + 4 + 8 + 16 = 30 s before giving up, enough for a server restart or a SQLite
    file locked by another writer. Each failure is logged as a warning naming ``what``; the
    last raises :class:`TrackingError`. ``timeout``: seconds an HTTP request may take (None for
    MLflow's default, for uploads of artifacts and models).
    """
    import mlflow

    default_tries, delay = _schedule()
    tries = default_tries if tries is None else tries

    def warn(state: tenacity.RetryCallState) -> None:
        log.warning("MLflow: %s failed (%s); try %d of %d in %.0f s", what, first_line(state.outcome.exception()),
                    state.attempt_number + 1, tries, state.next_action.sleep)

    # a refused connection, HTTP 5xx, "database is locked", a timeout: any Exception is retried,
    # but a full disk here is not the store's (an artifact's local copy): waiting does not free it
    schedule = tenacity.Retrying(stop=tenacity.stop_after_attempt(tries), before_sleep=warn,
                                 wait=tenacity.wait_exponential(multiplier=delay, max=MAX_DELAY),
                                 retry=tenacity.retry_if_exception(lambda e: isinstance(e, Exception)
                                                                   and not out_of_space(e)))
    try:
        for attempt in schedule:
            with attempt, _one_http_try(timeout):
                return call()
    except tenacity.RetryError as exc:
        raise TrackingError(
            f"MLflow tracking store {mlflow.get_tracking_uri()!r}: {what} failed "
            f"{tries} time(s), last: {first_line(exc.last_attempt.exception())}"
        ) from None
    raise AssertionError("unreachable")


class EpochLog:
    """Per-epoch metrics of one run, kept through a tracking outage so training never waits long on it.

    :meth:`log` queues an epoch's metrics and sends everything queued in one ``log_batch``
    through :func:`retry`. If the store stays down, training goes on: a warning says so, the
    metrics stay queued, and each next epoch tries once (no waiting) until the store answers,
    then sends the backlog (with the epochs' own steps and times). :meth:`close` gives the
    backlog a last full :func:`retry` and raises :class:`TrackingError` if it still cannot be
    sent. Re-sending a batch whose answer was lost adds nothing: the store keeps one entry per
    (key, step, time, value).
    """

    BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.pending: list = []  # mlflow.entities.Metric
        self.down = False

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._send(tries=1 if self.down else None)

    def steps(self) -> list[int]:
        """The epochs (steps) still waiting to be sent."""
        return sorted({m.step for m in self.pending})

    def _send(self, tries: int | None = None) -> bool:
        import mlflow

        client = mlflow.MlflowClient()
        try:
            while self.pending:
                chunk = self.pending[: self.BATCH]
                retry(lambda: client.log_batch(self.run_id, metrics=chunk), f"logging the metrics of epochs {self.steps()}",
                      tries)
                del self.pending[: len(chunk)]
        except TrackingError as exc:
            if not self.down:
                log.warning("%s; training goes on, the metrics are kept and sent when the store answers", exc)
            self.down = True
            return False
        if self.down:
            log.warning("MLflow: the tracking store answers again; the kept metrics were sent")
        self.down = False
        return True

    def close(self) -> None:
        """Send what is still queued (full :func:`retry`); :class:`TrackingError` if that fails."""
        import mlflow

        if self.pending and not self._send():
            raise TrackingError(f"MLflow tracking store {mlflow.get_tracking_uri()!r} stayed unreachable: the metrics "
                                f"of epochs {self.steps()} are not logged")


def experiment_id(name: str) -> str:
    """The MLflow experiment ``name``, created on first use; with the default SQLite store its
    artifacts go to ``<project root>/mlartifacts`` (an absolute path, like the store)."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (project_root() / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        exp = client.get_experiment_by_name(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


def parent_run_id(cfg: Config, params_path: str | Path = "params.yaml") -> str:
    """The id of this pipeline execution's parent run, created on first use."""
    import mlflow

    if os.environ.get("ZFNET_PARENT_RUN_ID"):
        return os.environ["ZFNET_PARENT_RUN_ID"]
    client = mlflow.MlflowClient()
    exp_id = experiment_id(cfg.tracking.experiment)
    key = pipeline_key(params_path)
    found = client.search_runs([exp_id], filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    run = client.create_run(
        exp_id,
        run_name=f"pipeline-{exp_name or 'workspace'}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            PIPELINE_KEY_TAG: key,
            "zfnet.role": "pipeline",
            "git_commit": git_commit(),
            "dvc_exp_name": exp_name,
            "profile": cfg.profile,
        },
    )
    client.log_batch(run.info.run_id, params=_params(cfg))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _params(cfg: Config, setting: dict | None = None) -> list:
    """``cfg`` flattened (``train.lr``), and ``setting`` as ``setting.<key>``, as MLflow params."""
    from mlflow.entities import Param

    values = {**flatten(to_dict(cfg)), **{f"setting.{k}": v for k, v in (setting or {}).items()}}
    return [Param(k, str(v)[:6000]) for k, v in sorted(values.items())]


def process_identity(pid: int | None = None) -> str:
    """``host/boot id/pid/start time`` of process ``pid`` (default: this one), the value of
    :data:`PROCESS_TAG`: names one process even across pid reuse and reboots (boot id and start
    time from ``/proc``; ``-`` where there is none)."""
    pid = os.getpid() if pid is None else pid
    return "/".join([socket.gethostname(), _boot_id(), str(pid), _start_ticks(pid) or "-"])


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


def _start_ticks(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``), None if it
    is not running (gone, or a zombie) or there is no ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def process_alive(identity: str) -> bool:
    """Whether the process named by ``identity`` (:func:`process_identity`) still runs; True when
    this machine cannot tell (another host, a tag it did not write)."""
    try:
        host, boot, pid, start = identity.rsplit("/", 3)
        pid = int(pid)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    if boot != _boot_id():
        return False  # the machine restarted since
    if Path("/proc").is_dir():
        return _start_ticks(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def open_run_tags() -> dict[str, str]:
    """The tags that make a new run this process's, open until it is marked complete
    (:data:`PROCESS_TAG`, :data:`STATE_TAG`); :func:`close_orphans` closes it if the process dies first."""
    return {PROCESS_TAG: process_identity(), STATE_TAG: "running"}


def close_orphans(exp_id: str, keep: str | None = None) -> list[str]:
    """Close the runs in experiment ``exp_id`` left open by processes that died before their
    stage finished (``kill -9``, out of memory, a power cut): state ``running`` (:data:`STATE_TAG`)
    and a process (:data:`PROCESS_TAG`) gone from this host. ``RUNNING`` and ``FINISHED`` ones
    become ``KILLED`` (state ``killed``), ``FAILED`` ones stay (state ``failed``). ``keep``: a run
    this process resumes. Returns the ids closed."""
    import mlflow

    client = mlflow.MlflowClient()
    found = retry(lambda: client.search_runs([exp_id], f"tags.`{STATE_TAG}` = 'running'", max_results=1000),
                  "looking for runs left open by killed processes")
    closed = []
    for run in found:
        run_id = run.info.run_id
        if run_id == keep or process_alive(run.data.tags.get(PROCESS_TAG, "")):
            continue
        failed = run.info.status == "FAILED"
        if not failed:
            retry(lambda: client.set_terminated(run_id, "KILLED"), f"ending run {run_id} as KILLED")
        retry(lambda: client.set_tag(run_id, STATE_TAG, "failed" if failed else "killed"), f"tagging run {run_id}")
        closed.append(run_id)
    if closed:
        log.warning("MLflow: closed %d run(s) whose process was killed before its stage finished: %s",
                    len(closed), ", ".join(closed))
    return closed


def log_artifacts(local: str | Path, artifact_path: str | None = None) -> None:
    """Log the file or folder ``local`` to the active run (under ``artifact_path``). A full disk
    where the artifacts are stored raises :class:`zfnet.io.DiskFullError` naming the destination
    and the bytes needed."""
    import mlflow

    local = Path(local)
    files = [local] if local.is_file() else [f for f in local.rglob("*") if f.is_file()]
    try:
        (mlflow.log_artifact if local.is_file() else mlflow.log_artifacts)(str(local), artifact_path)
    except OSError as exc:
        if not out_of_space(exc):
            raise
        dest = mlflow.get_artifact_uri(artifact_path).removeprefix("file://")
        raise disk_full(f"{dest}/{local.name}" if local.is_file() else dest, sum(f.stat().st_size for f in files),
                        exc) from None


@contextlib.contextmanager
def stage_run(
    cfg: Config,
    stage: str,
    variant: str = "",
    params_path: str | Path = "params.yaml",
    run_id: str | None = None,
    dvc_stage: str = "",
    setting: dict | None = None,
    last: bool = True,
) -> Iterator:
    """A child run of the pipeline's parent run for one stage (or variant); yields the active run.

    Its params are ``cfg``: pass the config the run actually ran with (an ablation variant's, not
    the profile's), so that comparing runs shows what differs between them.

    ``dvc_stage``: the ``dvc.yaml`` stage name when it differs from ``stage@variant`` (a stage
    that logs one run per setting, e.g. ``transfer@caltech101`` per training-set size).
    ``setting``: what tells this run from the stage's other runs that share ``cfg``
    (``{"dataset": "caltech101", "train_per_class": 15}``), logged as params ``setting.<key>``.
    ``last``: False for all but the last run of a stage process that logs several; when the last
    ends, every run the process opened is marked complete (:data:`STATE_TAG`), so the runs of a
    process killed in between are closed as killed (:func:`close_orphans`), not left finished.

    ``run_id`` continues an existing run (e.g. training resumed after a crash). The run ends
    FAILED if the body raises (an ``MlflowException`` becomes a one-line :class:`TrackingError`),
    and the parent's end time follows its last child. Runs left open by killed processes are
    closed first (:func:`close_orphans`).
    """
    import mlflow

    connect(cfg)
    parent = parent_run_id(cfg, params_path)
    exp_id = experiment_id(cfg.tracking.experiment)
    mlflow.set_experiment(experiment_id=exp_id)
    close_orphans(exp_id, keep=run_id)
    name = f"{stage}@{variant}" if variant else stage
    tags = {
        "stage": stage,
        "variant": variant,
        "dvc_stage": dvc_stage or name,
        "git_commit": git_commit(),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "data_hash": data_hash(),
        "profile": cfg.profile,
        "mlflow.parentRunId": parent,
        **open_run_tags(),
    }
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else name, tags=tags)
    _OPEN_RUNS.append(run.info.run_id)
    try:
        if run_id is None:
            mlflow.MlflowClient().log_batch(run.info.run_id, params=_params(cfg, setting))
        if Path(params_path).exists():
            log_artifacts(params_path)
        yield run
    except BaseException as exc:
        _end_run(run.info.run_id, parent, "FAILED", must=False)
        if isinstance(exc, mlflow.exceptions.MlflowException):  # the store failed under the stage: one line
            raise TrackingError(f"MLflow tracking store {mlflow.get_tracking_uri()!r}: {first_line(exc)}") from None
        raise
    _end_run(run.info.run_id, parent, "FINISHED", must=True, complete=last)


def _end_run(run_id: str, parent: str, status: str, must: bool, complete: bool = False) -> None:
    """End the active run ``run_id`` with ``status`` (retried); the parent's end time follows it.
    ``complete``: then mark every run this process opened complete (:data:`STATE_TAG`); a FAILED
    run is marked failed.

    ``must``: a store that stays down raises :class:`TrackingError`; else (the body already
    failed, its error is the one to show) only a warning is logged.
    """
    import mlflow

    client = mlflow.MlflowClient()
    try:
        with _one_http_try():
            mlflow.end_run(status)  # leaves the active run even when the store does not answer
    except Exception:
        try:
            retry(lambda: client.set_terminated(run_id, status), f"ending run {run_id} as {status}",
                  tries=None if must else 1)
        except TrackingError as exc:
            if must:
                raise
            log.warning("%s", exc)
            return
    done = [run_id] if status == "FAILED" else list(_OPEN_RUNS) if complete else []
    try:
        for done_id in done:
            retry(lambda: client.set_tag(done_id, STATE_TAG, "failed" if status == "FAILED" else "complete"),
                  f"marking run {done_id} {status.lower()}", tries=None if must else 1)
            _OPEN_RUNS.remove(done_id)
    except TrackingError as exc:
        if must:
            raise
        log.warning("%s", exc)
    with contextlib.suppress(Exception), _one_http_try():
        client.set_terminated(parent, "FINISHED")
