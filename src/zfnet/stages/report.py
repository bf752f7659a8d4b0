"""DVC stage ``report``: one HTML page with every figure and table of the paper as reproduced here.

Deps: every figure, table and metrics file listed in :mod:`zfnet.report.registry` that a stage
produces (the stage runs last). Params: ``report``. Outs: ``report.out`` (``index.html`` +
``img/``). Metrics ``metrics/report.json``: how many of the paper's items were produced and how many of its claims hold.
MLflow: a ``report`` child run with those counts and the page as an artifact.
"""

from __future__ import annotations

from zfnet.config import Config
from zfnet.io import write_json
from zfnet.paths import METRICS
from zfnet.stages.common import run_stage


def main(cfg: Config) -> None:
    import logging

    import mlflow

    from zfnet import tracking
    from zfnet.report import build

    with tracking.stage_run(cfg, "report"):
        counts = build(cfg)
        headline = ("items", "items_produced", "claims", "claims_hold", "claims_inconclusive", "claims_fail")
        write_json(METRICS / "report.json", {k: counts[k] for k in headline})  # `dvc metrics show`
        mlflow.log_metrics(counts)
        tracking.log_artifacts(cfg.report.out, "report")
    logging.getLogger(__name__).info("wrote %s/index.html: %s", cfg.report.out, counts)


if __name__ == "__main__":
    run_stage("report", main)
