"""DVC stage ``findings``: judge every claim of the paper on this run's numbers (docs/findings.md).

Deps: the metrics files of the stages that measure the claims. Out: ``metrics/findings.json``
(:func:`zfnet.findings.judge_all`: each claim's verdict, statistic, value, threshold and the numbers
behind it; counts of ``holds`` / ``fails`` / ``inconclusive``). MLflow: a ``findings`` child run
with the counts as metrics, each claim's verdict as a tag ``finding.<id>``, the file as an
artifact, and the counts also on the pipeline's parent run.
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
    from zfnet.findings import judge_all, load_metrics

    result = judge_all(load_metrics(METRICS, cfg.ablation.variants))
    write_json(METRICS / "findings.json", result)
    counts = {k: result[k] for k in ("holds", "fails", "inconclusive")}
    with tracking.stage_run(cfg, "findings") as run:
        mlflow.log_metrics(counts)
        mlflow.set_tags({f"finding.{f['id']}": f["verdict"] for f in result["findings"]})
        tracking.log_artifacts(METRICS / "findings.json")
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            client = mlflow.MlflowClient()
            for key, value in counts.items():
                client.log_metric(parent, f"findings_{key}", value)
    logging.getLogger(__name__).info("findings: %s", counts)


if __name__ == "__main__":
    run_stage("findings", main)
