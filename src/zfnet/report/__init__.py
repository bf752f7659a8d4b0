"""The report: every figure and table of the paper as this pipeline reproduced it, in one HTML page.

- :mod:`zfnet.report.registry`: the paper's figures/tables, captions and where the stages write them;
- :mod:`zfnet.report.html`: the static page (``index.html`` + ``img/``);
- :mod:`zfnet.report.runs`: the pipeline's MLflow runs as pandas tables (also ``zfnet runs``).

:func:`build` is what the ``report`` stage calls; it works from a notebook too.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from zfnet.config import Config, to_dict
from zfnet.report.html import Meta, Run, write_report

__all__ = ["build", "metadata", "pipeline_runs", "write_report", "Meta", "Run"]


def pipeline_runs(experiment: str, profile: str, dvc_exp_name: str = "") -> list[Run]:
    """The newest MLflow run of each stage (and variant) of the pipeline logged to MLflow
    ``experiment`` with ``profile`` and DVC experiment name ``dvc_exp_name``, from the current
    tracking store (call :func:`zfnet.tracking.connect` first)."""
    from zfnet.report.runs import latest_stage_runs, search

    runs = search(experiment)
    tags = runs.reindex(columns=["tags.profile", "tags.dvc_exp_name", "tags.mlflow.parentRunId"]).fillna("")
    latest = latest_stage_runs(runs[(tags["tags.profile"] == profile) & (tags["tags.dvc_exp_name"] == dvc_exp_name)])
    text = latest.reindex(columns=["tags.mlflow.runName", "tags.variant", "tags.mlflow.parentRunId",
                                   "tags.dvc_stage"]).fillna("")
    return [
        Run(run_id=r["run_id"], name=t["tags.mlflow.runName"], stage=r["tags.stage"], variant=t["tags.variant"],
            status=r["status"], start_time=r["start_time"].strftime("%Y-%m-%d %H:%M:%S"),
            experiment_id=str(r["experiment_id"]), parent_run_id=t["tags.mlflow.parentRunId"],
            dvc_stage=t["tags.dvc_stage"])
        for (_, r), (_, t) in zip(latest.iterrows(), text.iterrows())
    ]


def _public(uri: str) -> str:
    """``uri`` without user name and password."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def metadata(cfg: Config, root: str | Path = ".", params_path: str | Path = "params.yaml") -> Meta:
    """Git commit, profile, data hash (``dvc.lock``), params, date and the MLflow runs of this pipeline."""
    import os

    from zfnet import tracking

    root = Path(root)
    uri = tracking.connect(cfg)
    ui = cfg.report.mlflow_ui or (uri if uri.startswith(("http://", "https://")) else "")
    params = root / params_path
    return Meta(
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        git_commit=tracking.git_commit(),
        profile=cfg.profile,
        data_hash=tracking.data_hash(root / "dvc.lock"),
        params_yaml=params.read_text() if params.is_file() else "",
        tracking_uri=_public(uri),
        experiment=cfg.tracking.experiment,
        mlflow_ui=_public(ui),
        runs=pipeline_runs(cfg.tracking.experiment, cfg.profile, os.environ.get("DVC_EXP_NAME", "")),
    )


def build(cfg: Config, out: str | Path | None = None, root: str | Path = ".") -> dict:
    """Write the report of the outputs under ``root`` to ``out`` (default ``cfg.report.out``);
    returns the counts of :func:`zfnet.report.html.write_report`."""
    import json

    from zfnet.report.registry import ITEMS

    findings_file = Path(root) / "metrics" / "findings.json"
    findings = json.loads(findings_file.read_text()) if findings_file.is_file() else None
    return write_report(out or Path(root) / cfg.report.out, metadata(cfg, root), to_dict(cfg), root, ITEMS, findings)
