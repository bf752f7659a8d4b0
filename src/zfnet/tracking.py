"""MLflow tracking: one parent run per pipeline execution, one child run per stage.

- Store: ``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri`` from params, else SQLite at an
  absolute path ``<project root>/mlflow.db``. The project root is found even from inside DVC's
  temporary experiment folders (``.dvc/tmp/exps/...``) so queued experiments log to the same store.
- Parent run: found by the tag ``zfnet.pipeline_key`` = hash of (git commit, DVC experiment
  name, params.yaml); every stage of one ``dvc repro`` / ``dvc exp run`` shares it.
  ``ZFNET_PARENT_RUN_ID`` overrides (orchestrators such as ``zfnet retrain`` set it).
- Child runs carry tags ``stage``, ``variant``, ``git_commit``, ``dvc_exp_name``, ``data_hash``,
  the flattened params and ``params.yaml`` as an artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import yaml

from zfnet.config import Config, flatten, to_dict

log = logging.getLogger(__name__)

PIPELINE_KEY_TAG = "zfnet.pipeline_key"


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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_hash(lock_path: str | Path = "dvc.lock", stage: str = "preprocess") -> str:
    """The md5 of ``stage``'s first out in ``dvc.lock`` (the prepared data), or ``unknown``."""
    try:
        lock = yaml.safe_load(Path(lock_path).read_text())
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


def connect(cfg: Config | None = None) -> str:
    """Point MLflow at the store and fail fast with one clear line if it cannot be reached."""
    import mlflow

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    # One try with a short timeout: MLflow's default HTTP retries take minutes to give up on a dead server.
    probe = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in probe}
    os.environ.update({k: v for k, v in probe.items() if saved[k] is None})
    try:
        mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception as exc:  # unreachable server, bad credentials, unwritable SQLite file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow tracking store {uri!r} is not usable: {first}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
    return uri


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
    return client.create_experiment(name, artifact_location=location)


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


def _params(cfg: Config) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in sorted(flatten(to_dict(cfg)).items())]


@contextlib.contextmanager
def stage_run(
    cfg: Config,
    stage: str,
    variant: str = "",
    params_path: str | Path = "params.yaml",
    run_id: str | None = None,
) -> Iterator:
    """A child run of the pipeline's parent run for one stage (or variant); yields the active run.

    ``run_id`` continues an existing run (e.g. training resumed after a crash). The run ends
    FAILED if the body raises, and the parent's end time follows its last child.
    """
    import mlflow

    connect(cfg)
    parent = parent_run_id(cfg, params_path)
    mlflow.set_experiment(experiment_id=experiment_id(cfg.tracking.experiment))
    tags = {
        "stage": stage,
        "variant": variant,
        "git_commit": git_commit(),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "data_hash": data_hash(),
        "profile": cfg.profile,
        "mlflow.parentRunId": parent,
    }
    name = f"{stage}@{variant}" if variant else stage
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, tags=tags) as run:
        if run_id is None:
            mlflow.MlflowClient().log_batch(run.info.run_id, params=_params(cfg))
        if Path(params_path).exists():
            mlflow.log_artifact(str(params_path))
        try:
            yield run
        finally:
            with contextlib.suppress(Exception):
                mlflow.MlflowClient().set_terminated(parent, "FINISHED")
