"""DVC stage ``data``: write the synthetic ImageNet layout, or point at a real one.

Out: ``data/raw/`` with ``dataset.json`` (``{"source", "root", "classes", "counts"}``) and, for
the synthetic source, the generated dataset in ``data/raw/imagenet``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict

import mlflow

from zfnet import tracking
from zfnet.config import Config
from zfnet.data import imagenet, synthetic
from zfnet.io import write_json
from zfnet.paths import DATASET_JSON, RAW
from zfnet.stages.common import run_stage

log = logging.getLogger("zfnet.stages.data")


def main(cfg: Config) -> None:
    if cfg.data.source == "synthetic":
        if RAW.exists():
            shutil.rmtree(RAW)
        root = RAW / "imagenet"
        summary = synthetic.write_imagenet(root, cfg.data.synthetic, workers=cfg.data.workers)
        log.info("wrote the synthetic ImageNet layout to %s: %s", root, summary)
        root_str, extra = str(root), {"synthetic": asdict(cfg.data.synthetic)}
    else:
        root_str, extra = cfg.data.root, {}
    counts = {split: imagenet.count_split(root_str, split) for split in ("train", "val")}
    classes = imagenet.read_classes(root_str)
    RAW.mkdir(parents=True, exist_ok=True)
    write_json(
        DATASET_JSON,
        {"source": cfg.data.source, "root": root_str, "classes": len(classes), "counts": counts, **extra},
    )
    log.info("dataset at %s: %d classes, %s", root_str, len(classes), counts)
    with tracking.stage_run(cfg, "data"):
        mlflow.log_metrics({"classes": len(classes), **{f"{split}_images": n for split, n in counts.items()}})
        tracking.log_artifacts(DATASET_JSON)


if __name__ == "__main__":
    run_stage("data", main)
