"""DVC stage ``preprocess``: smallest side to S, centre S x S crop, per-pixel mean; shards + manifest.

Out: ``data/prepared/{train,val}/`` (see :mod:`zfnet.data.preprocess`); metrics
``metrics/preprocess.json`` (found / written / skipped per split).
"""

from __future__ import annotations

import json
import logging

import mlflow

from zfnet import tracking
from zfnet.config import Config
from zfnet.data.preprocess import preprocess
from zfnet.io import write_json
from zfnet.paths import DATASET_JSON, METRICS, PREPARED
from zfnet.stages.common import run_stage

log = logging.getLogger("zfnet.stages.preprocess")


def main(cfg: Config) -> None:
    dataset = json.loads(DATASET_JSON.read_text())
    p = cfg.preprocess
    manifests = preprocess(dataset["root"], PREPARED, p.size, p.shard_size, p.workers)
    summary = {
        split: {k: m[k] for k in ("found", "count", "skipped")} for split, m in manifests.items()
    }
    write_json(METRICS / "preprocess.json", summary)
    log.info("preprocessed: %s", summary)
    with tracking.stage_run(cfg, "preprocess"):
        mlflow.log_metrics({f"{split}_{k}": v for split, counts in summary.items() for k, v in counts.items()})
        for split in manifests:
            tracking.log_artifacts(PREPARED / split / "skipped.csv", f"skipped/{split}")


if __name__ == "__main__":
    run_stage("preprocess", main)
